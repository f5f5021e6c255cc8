"""Run events in people's words: the closing summary (cron mail, terminal, chat) and the text a
chat webhook shows for each event it is sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from upgradectl.duration import format_duration
from upgradectl.events import Event
from upgradectl.journal import controller
from upgradectl.results import NodeResult, RunSummary


def render_summary(summary: RunSummary) -> str:
    """The closing summary, readable at a glance in a cron mail."""
    tally: dict[str, int] = {}
    for node in summary.results:
        tally[node.result] = tally.get(node.result, 0) + 1
    forced = len(summary.forced)
    counts = ", ".join(f"{count} {result}" for result, count in tally.items()) or "no nodes"
    lines = [
        f"upgradectl {summary.command} {summary.run_id}: {counts}; "
        f"{forced} session{'s' if forced != 1 else ''} forced; exit {int(summary.exit_code)}"
        f" ({summary.result})"
    ]
    width = max((len(node.node) for node in summary.results), default=0)
    for node in summary.results:
        lines.append(f"  {node.node:<{width}}  {node.result:<10} {node.message}".rstrip())
        lines.extend(
            f"      cut: {session_in_words(session)} (lasted {format_duration(session['age'])})"
            if session.get("age") is not None
            else f"      cut: {session_in_words(session)}"
            for session in node.forced
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
        return render_summary(RunSummary.from_event(event))
    if event.kind == "run-start":
        who = controller()
        dry = "a dry run of " if event.data.get("dry_run") else ""
        return f"upgradectl: {who['user']}@{who['host']} started {dry}{event.message}"
    ended = NodeResult.from_dict(str(event.node), event.data)  # a node's result: `node-done`
    cut = [session_in_words(session) for session in ended.forced]
    cuts = f" (sessions cut: {', '.join(cut)})" if cut else ""
    return f"upgradectl: {event.node}: {event.message}{cuts}"
