"""The report of a run: one offline HTML page, or a short Markdown block.

`gather` collects what the page shows (the decision, every candidate's numbers,
the cascade sweep, the items where candidates disagree, where the costs came
from); `render_html` and `render_markdown` lay it out.
"""

from costroute.report.data import Report, gather
from costroute.report.html import render_html
from costroute.report.markdown import render_markdown

FORMATS = ("html", "markdown")

__all__ = ["FORMATS", "Report", "gather", "render_html", "render_markdown"]
