"""Run events in people's words: the closing summary (cron mail, terminal, chat) and the text a
chat webhook shows for each event it is sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from upgradectl.duration import format_duration
from upgradectl.events import Event
from upgradectl.journal import controller


def render_summary(summary: Mapping[str, Any]) -> str:
    """The closing summary, readable at a glance in a cron mail."""
    nodes: dict[str, dict[str, Any]] = summary.get("nodes", {})
    tally: dict[str, int] = {}
    for result in nodes.values():
        tally[result["result"]] = tally.get(result["result"], 0) + 1
    forced = sum(len(result.get("forced", [])) for result in nodes.values())
    counts = ", ".join(f"{count} {result}" for result, count in tally.items()) or "no nodes"
    lines = [
        f"upgradectl {summary.get('command', '')} {summary.get('run_id', '')}: {counts}; "
        f"{forced} session{'s' if forced != 1 else ''} forced; exit {summary.get('exit_code')}"
        f" ({summary.get('result', '')})"
    ]
    width = max((len(name) for name in nodes), default=0)
    for name, result in nodes.items():
        lines.append(
            f"  {name:<{width}}  {result['result']:<10} {result.get('message', '')}".rstrip()
        )
        lines.extend(
            f"      cut: {session_in_words(session)} (lasted {format_duration(session['age'])})"
            if session.get("age") is not None
            else f"      cut: {session_in_words(session)}"
            for session in result.get("forced", [])
        )
    return "\n".join(lines)


def session_in_words(session: Mapping[str, Any]) -> str:
    """A session in people's terms (``client 10.0.0.21:40312``, ``from ... to ...``) when the
    playbook's `sessions` step names them, with the service's own id after."""
    named = " ".join(f"{key} {value}" for key, value in session.get("details", {}).items() if value)
    return f"{named} ({session.get('id')})" if named else str(session.get("id"))


def chat_text(event: Event) -> str:
    """What a chat channel shows for a notified event (run start, a node's result, the summary)."""
    if event.kind == "summary":
        return render_summary(event.data)
    if event.kind == "run-start":
        who = controller()
        dry = "a dry run of " if event.data.get("dry_run") else ""
        return f"upgradectl: {who['user']}@{who['host']} started {dry}{event.message}"
    cut = [session_in_words(session) for session in event.data.get("forced", ())]
    cuts = f" (sessions cut: {', '.join(cut)})" if cut else ""
    return f"upgradectl: {event.node}: {event.message}{cuts}"
