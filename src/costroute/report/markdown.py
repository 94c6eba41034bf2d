"""The report as a short Markdown block, for a pull request or a ticket.

Every text that came from the run (model names, the task's name, reasons that
quote them) is escaped, so a name holding Markdown or HTML shows as written.
"""

from __future__ import annotations

import re
from typing import Any

from costroute.report.data import Report

HEADERS = [
    "candidate",
    "eligible",
    "quality [95% CI]",
    "cost/result [95% CI]",
    "expected cost/result",
    "monthly",
    "cost from",
]

_SPECIAL = re.compile(r"([\\`*_\[\]<|~])")


def render_markdown(report: Report) -> str:
    decision = report.decision
    lines = [
        f"**{md(report.task)}** · run `{report.run['id']}` · "
        f"**{decision['status'].replace('_', ' ')}**",
        "",
        md(decision["sentence"]),
        "",
        md(decision["reason"]),
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join(_align(header) for header in HEADERS) + "|",
        *(_row(c, _cost_kinds(report)) for c in report.candidates),
        "",
        *(f"- {line}" for line in _notes(report)),
    ]
    return "\n".join(lines) + "\n"


def md(text: str) -> str:
    """Text with Markdown's and HTML's special characters escaped."""
    return _SPECIAL.sub(r"\\\1", text).replace("\n", " ")


def _align(header: str) -> str:
    return "---" if header in ("candidate", "eligible", "cost from") else "---:"


def _row(candidate: dict[str, Any], kinds: dict[str, str]) -> str:
    text = candidate["text"]
    name = md(candidate["name"])
    if candidate["route"]:
        name = f"**{name}** (route)"
    cells = [
        name,
        "yes" if candidate["eligible"] else "no",
        text["quality"],
        f"{text['cost_per_result']} {text['cost_per_result_ci']}".strip(),
        text["expected"],
        text["monthly"],
        kinds.get(
            candidate["name"], "cascade" if candidate["kind"] == "cascade" else ""
        ),
    ]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _cost_kinds(report: Report) -> dict[str, str]:
    return {row["model"]: row["cost_kind"] for row in report.costs["rows"]}


def _notes(report: Report) -> list[str]:
    decision = report.decision
    dials = " · ".join(f"{name} {md(value)}" for name, value in decision["dials"])
    notes = [f"Dials: {dials}"]
    notes += [md(line) for line in decision["money"]]
    notes.append(_cascade_note(report.cascade))
    notes.append(_disagreement_note(report.disagreements))
    costs = report.costs
    notes.append(
        f"Prices recorded {costs['taken_at']} ({md(costs['catalog'])}); measuring "
        f"this batch cost {costs['measurement']}."
    )
    notes += [md(notice) for notice in report.notices]
    return notes


def _cascade_note(sweep: dict[str, Any]) -> str:
    if not sweep["available"]:
        return md(sweep["message"])
    chosen = next((p for p in sweep["points"] if p["chosen"]), None)
    held_out = sweep["splits"][-1]
    policy = md(chosen["label"]) if chosen else "no policy"
    role = "the route" if sweep["is_route"] else "not the route"
    return (
        f"Cascade {md(sweep['cheap'])} → {md(sweep['strong'])} ({role}): {policy}; "
        f"held out: {sweep['metric']} {held_out['quality']}, "
        f"{held_out['cost']} expected per result, {held_out['rate']} escalated."
    )


def _disagreement_note(table: dict[str, Any]) -> str:
    if table["message"] and not table["found"]:
        return md(table["message"])
    return (
        f"Candidates disagree on {table['found']} of {table['items']} items; "
        "the HTML report lists them with each output."
    )
