"""``history RUN_ID``: one run as a page of text, each drain drawn as a chart (plotext), or as JSON.

plotext is imported only here, and only when a page with a drain is drawn: ``--help`` and the
upgrade path never load it.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from typing import Any

from upgradectl.duration import format_duration
from upgradectl.events import SCHEMA_VERSION
from upgradectl.history import NodeStory, RunPage
from upgradectl.wording import session_in_words

# Above this span a chart counts minutes, below it seconds.
MINUTES_FROM = 180.0


def page_json(page: RunPage) -> str:
    """The page as one JSON document, readings included."""
    body = {"event": "run", "schema_version": SCHEMA_VERSION, **page.as_dict()}
    return json.dumps(body, default=str)


def page_text(page: RunPage, width: int = 80, color: bool = False) -> str:
    """The page for people: who ran what and when, then each node's story and drain chart."""
    row = page.row
    version = f" to {row.version}" if row.version else ""
    dry = " (dry run: nothing was changed)" if row.dry_run else ""
    took = f"took {format_duration(row.duration)}" if row.duration is not None else "unfinished"
    ended = f"exit {row.exit_code} ({row.result})" if row.exit_code is not None else row.result
    lines = [
        f"run {row.run}: {row.command}{version} {', '.join(row.nodes)}{dry}",
        f"  by {row.who}, started {clock(row.started, day=True)}, {took}; {ended}",
    ]
    if page.argv:
        lines.append(f"  command line: {shlex.join(page.argv)}")
    if row.torn_lines:
        lines.append(f"  journal: {len(row.torn_lines)} torn line(s) skipped")
    for story in page.stories:
        lines += ["", *_story_lines(story)]
        if story.readings:
            lines += ["", drain_chart(story, width, color)]
    return "\n".join(lines)


def _story_lines(story: NodeStory) -> list[str]:
    lines = [f"{story.node}: {story.result}" + (f" ({story.message})" if story.message else "")]
    if story.times:
        start = min(story.times.values())
        moments = [
            f"{name} {clock(at)}" + (f" (+{format_duration(at - start)})" if at > start else "")
            for name, at in sorted(story.times.items(), key=lambda item: item[1])
        ]
        lines.append("  " + ", ".join(moments))
    if story.forced:
        cut_at = story.forced[0].get("cut_at")
        lines.append(f"  cut {len(story.forced)} session{'s' if len(story.forced) != 1 else ''}"
                     f" at {clock(cut_at)}:")  # fmt: skip
        lines += [f"    {session_in_words(s)}  lasted {_lasted(s)}" for s in story.forced]
    return lines


def _lasted(session: dict[str, Any]) -> str:
    return format_duration(session["age"]) if session.get("age") is not None else "?"


def clock(epoch: float | None, day: bool = False) -> str:
    """A time of day for people (local time), with the date when ``day``."""
    if epoch is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S" if day else "%H:%M:%S", time.localtime(epoch))


def drain_chart(story: NodeStory, width: int = 80, color: bool = False) -> str:
    """The node's drain drawn in the terminal: active sessions over time, the deadline, the force."""
    import plotext  # noqa: PLC0415 - only a page with a drain needs it

    points, marks = story.curve(), story.marks()
    span, top = story.extent()
    scale, unit = (60.0, "minutes") if span > MINUTES_FROM else (1.0, "seconds")
    figure = plotext.figure
    figure.clear()
    figure.plot_size(width, 16)
    curve = figure.signal([x / scale for x, _ in points], [a for _, a in points], marker="braille")
    curve.lines(True)
    figure.draw(curve)
    for name, at in marks.items():
        x = at / scale
        figure.draw(figure.segment([x, x], [0, top], marker="│" if name == "deadline" else "┆"))
    for height, (name, at) in zip((0.9, 0.7), marks.items(), strict=False):
        # Labels go on top of every line, reading away from the nearer edge: never cut off.
        label, side = (f"{name} ", "right") if at > span / 2 else (f" {name}", "left")
        figure.draw(figure.text(at / scale, top * height, label, alignment=side))
    step = max(1, math.ceil(top / 4))  # whole sessions on the count axis
    figure.ruler("y").ticks(sorted({*range(0, top + 1, step), top}))
    figure.title(f"{story.node}: active sessions, {unit} since the first reading")
    built = figure.build()
    return str(built if color else plotext.uncolorize(built))
