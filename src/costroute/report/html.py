"""The report as one HTML file that opens offline.

Styles, the vendored Chart.js and the page's own script are inlined; the data
goes in as JSON inside `<script type="application/json">` with every `<`, `>`
and `&` escaped, and the page's script writes all of it with `textContent`, so
an output holding HTML or a script shows as text and never runs.
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from importlib import resources
from typing import Any

from costroute.report.data import Report

CHART_JS = "chart.umd.min.js"

_SLOT = re.compile(r"\{\{(title|style|data|chart_js|report_js)\}\}")
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)
_SCRIPT_BREAKERS = ("</script", "<!--")


def render_html(report: Report) -> str:
    """The whole page; the slots are filled in one pass, so no filling is
    ever read as a slot."""
    values = {
        "title": html.escape(report.title),
        "style": _own("report.css"),
        "data": page_json(report.page()),
        "chart_js": _vendored(CHART_JS),
        "report_js": _own("report.js"),
    }
    return _SLOT.sub(lambda match: values[match.group(1)], _own("template.html"))


def page_json(data: dict[str, Any]) -> str:
    """JSON that cannot end its script element or open a comment in it."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


@cache
def _own(name: str) -> str:
    return resources.files("costroute.report").joinpath(name).read_text("utf-8")


@cache
def _vendored(name: str) -> str:
    assets = resources.files("costroute").joinpath("report_assets")
    text = assets.joinpath(name).read_text("utf-8")
    # The source map is not shipped; a pointer to it would only be a dead link.
    text = _SOURCE_MAP.sub("", text)
    lowered = text.lower()
    for breaker in _SCRIPT_BREAKERS:
        if breaker in lowered:
            raise ValueError(f"{name} holds {breaker!r} and cannot be inlined")
    return text
