"""docs/json.md, rendered from the schema the package ships: the page cannot drift from it."""

from __future__ import annotations

from typing import Any

INTRO = """\
# JSON output

With `--json`, a run writes one JSON object per line on stdout, one per event, and ends with a
`summary`. The same objects are posted by `--notify URL` (with a `text` field added, in people's
words, which Slack- and Mattermost-style incoming webhooks show), and `--report FILE` holds the
summary. Every object carries `"schema_version": {version}`; a field that changes meaning or goes
away raises it, a new field or a new event does not. The JSON Schema (draft 2020-12) ships inside
the package as `upgradectl/events.schema.json`; this page is generated from it, and the tests
validate every event of real runs against it.

Match on `event`, never on `message` (it is for people and may be reworded).

Fields every event may carry:

"""


def _type(spec: dict[str, Any]) -> str:
    if "const" in spec:
        return f"`{spec['const']}`"
    if "enum" in spec:
        return " or ".join(f"`{value}`" for value in spec["enum"])
    if "$ref" in spec:
        return str(spec["$ref"]).rsplit("/", 1)[-1].replace("_", " ")
    kind = spec.get("type", "any")
    if kind == "array":
        return f"list of {_type(spec['items'])}"
    if kind == "object" and isinstance(spec.get("additionalProperties"), dict):
        return f"map of {_type(spec['additionalProperties'])}"
    return " or ".join(kind) if isinstance(kind, list) else kind


def _table(properties: dict[str, Any], required: list[str]) -> list[str]:
    rows = ["| field | type | always | meaning |", "|---|---|---|---|"]
    for name, spec in properties.items():
        always = "yes" if name in required else ""
        rows.append(f"| `{name}` | {_type(spec)} | {always} | {spec.get('description', '')} |")
    return rows


def render(schema: dict[str, Any]) -> str:
    """The page for people: the envelope, then every event with its fields, then shared shapes."""
    defs = schema["$defs"]
    envelope = defs["envelope"]
    version = envelope["properties"]["schema_version"]["const"]
    lines = [INTRO.format(version=version).rstrip(), ""]
    lines += _table(envelope["properties"], envelope["required"])
    lines += ["", "## Events", ""]
    for kind in event_kinds(schema):
        spec = defs[kind]
        scope = {
            "#/$defs/run_envelope": "about the whole run (no `node`)",
            "#/$defs/node_envelope": "about one node (`node` is set)",
            "#/$defs/envelope": "about the run or one node",
        }[spec["$ref"]]
        lines += [f"### `{kind}`", "", spec["description"], "", f"Scope: {scope}.", ""]
        lines += _own_fields(spec)
    lines += ["## Documents of the reading commands", "", DOCUMENTS, ""]
    for kind in document_kinds(schema):
        lines += [f"### `{kind}`", "", defs[kind]["description"], "", *_own_fields(defs[kind])]
    lines += ["## Shapes used above", ""]
    for shape in ("session", "forced_session", "node_result", "node_story", "reading"):
        spec = defs[shape]
        lines += [f"### {shape.replace('_', ' ')}", "", spec["description"], ""]
        lines += [*_table(spec["properties"], spec["required"]), ""]
    return "\n".join(lines).rstrip() + "\n"


DOCUMENTS = """\
`plan`, `status` and `history` with `--json` print documents rather than a run's events: they
carry `event` (the kind of document) and `schema_version`, but no `time`. `history --json` and
`history --forced --json` print one per line."""


def _own_fields(spec: dict[str, Any]) -> list[str]:
    own = {name: value for name, value in spec["properties"].items() if name != "event"}
    return [*_table(own, spec["required"]), ""] if own else []


def document_kinds(schema: dict[str, Any]) -> list[str]:
    """The kinds of the reading commands' documents (no `time`, no `node`)."""
    defs = schema["$defs"]
    return [
        kind
        for kind in schema["properties"]["event"]["enum"]
        if defs[kind]["$ref"] == "#/$defs/document_envelope"
    ]


def event_kinds(schema: dict[str, Any]) -> list[str]:
    """The kinds of a run's events."""
    documents = document_kinds(schema)
    return [kind for kind in schema["properties"]["event"]["enum"] if kind not in documents]
