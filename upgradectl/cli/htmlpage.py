"""``history RUN_ID --html FILE``: one run as a self-contained web page, to attach to a change
ticket or mail: each node's story, its drain drawn as inline SVG, and the helpdesk table.

No script, no external file, no font or style fetched: the page shows the same offline.
"""

from __future__ import annotations

import shlex
from html import escape

from upgradectl.cli.runpage import clock
from upgradectl.duration import format_duration
from upgradectl.history import NodeStory, RunPage
from upgradectl.wording import session_in_words

# The chart's size and the margins that hold its axis labels, in SVG user units (pixels).
WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 16, 24, 32

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #1f2328; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; text-align: left; }
code { background: #f6f8fa; padding: .1em .3em; }
svg text { font: 12px system-ui, sans-serif; fill: #57606a; }
.curve { fill: none; stroke: #0969da; stroke-width: 2; }
.deadline { stroke: #cf222e; stroke-dasharray: 6 4; }
.force { stroke: #9a6700; stroke-dasharray: 2 3; }
.axis { stroke: #8c959f; }
"""


def page_html(page: RunPage) -> str:
    """The whole page: a heading that says who ran what and when, each node, the sessions cut."""
    row = page.row
    version = f" to {row.version}" if row.version else ""
    dry = " (dry run: nothing was changed)" if row.dry_run else ""
    took = f"took {format_duration(row.duration)}" if row.duration is not None else "unfinished"
    ended = f"exit {row.exit_code} ({row.result})" if row.exit_code is not None else row.result
    title = f"upgradectl run {row.run}: {row.command}{version} {', '.join(row.nodes)}{dry}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>By {escape(row.who)}, started {clock(row.started, day=True)}, {took}; "
        f"{escape(ended)}.</p>",
    ]
    if page.argv:
        parts.append(f"<p>Command line: <code>{escape(shlex.join(page.argv))}</code></p>")
    for story in page.stories:
        parts += _node(story)
    parts += _helpdesk(page)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _node(story: NodeStory) -> list[str]:
    parts = [
        f'<h2 id="node-{escape(story.node)}">{escape(story.node)}: {escape(story.result)}</h2>',
        f"<p>{escape(story.message)}</p>" if story.message else "",
    ]
    if story.times:
        ordered = sorted(story.times.items(), key=lambda item: item[1])
        parts.append("<table><tr>" + "".join(f"<th>{escape(name)}</th>" for name, _ in ordered)
                     + "</tr><tr>" + "".join(f"<td>{clock(at)}</td>" for _, at in ordered)
                     + "</tr></table>")  # fmt: skip
    if story.readings:
        parts.append(drain_svg(story))
    return [part for part in parts if part]


def _helpdesk(page: RunPage) -> list[str]:
    cut = [session for story in page.stories for session in story.forced]
    if not cut:
        return ["<h2>Sessions cut</h2>", "<p>No session was cut.</p>"]
    rows = ["<tr><th>cut at</th><th>node</th><th>session</th><th>had lasted</th><th>run</th></tr>"]
    for session in cut:
        lasted = format_duration(session["age"]) if session.get("age") is not None else "?"
        cells = (clock(session.get("cut_at"), day=True), session.get("node"), session_in_words(session),
                 lasted, session.get("run"))  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in cells) + "</tr>")
    return [
        "<h2>Sessions cut (for the helpdesk)</h2>",
        '<table class="helpdesk">',
        *rows,
        "</table>",
    ]


def drain_svg(story: NodeStory) -> str:
    """The drain as an inline SVG chart: the count over time, the deadline and the force."""
    points, marks = story.curve(), story.marks()
    span, top = story.extent()
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(seconds: float) -> float:
        return round(LEFT + inner_w * seconds / span, 1)

    def y(active: float) -> float:
        return round(TOP + inner_h * (1 - active / top), 1)

    path = " ".join(
        f"{'M' if n == 0 else 'L'}{x(at)},{y(active)}" for n, (at, active) in enumerate(points)
    )
    label = f"{story.node}: active sessions over {format_duration(span)}"
    parts = [
        f'<svg class="drain" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{y(0)}" x2="{WIDTH - RIGHT}" y2="{y(0)}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y(0)}"/>',
        f'<text x="{LEFT - 6}" y="{y(top) + 4}" text-anchor="end">{top}</text>',
        f'<text x="{LEFT - 6}" y="{y(0) + 4}" text-anchor="end">0</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 10}">0</text>',
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 10}" text-anchor="end">'
        f"{format_duration(span)}</text>",
    ]
    for name, at in marks.items():
        anchor = "end" if at > span / 2 else "start"
        parts.append(f'<line class="{name}" x1="{x(at)}" y1="{TOP}" x2="{x(at)}" y2="{y(0)}"/>')
        parts.append(f'<text x="{x(at)}" y="{TOP - 8 if name == "deadline" else TOP + 12}" '
                     f'text-anchor="{anchor}">{name}</text>')  # fmt: skip
    parts.append(f'<path class="curve" d="{path}"/>')
    parts.append("</svg>")
    return "\n".join(parts)
