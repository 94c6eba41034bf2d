"""The report: one HTML file checked in a real headless Chromium, and Markdown.

The browser is Debian's `chromium` driven by Playwright (`scripts/test.sh`
installs it); the page must load from a file:// URL with no console errors and
no request beyond its own file, and draw every chart it promises.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costroute import pricing
from costroute.report import gather
from costroute.report.data import frontier
from costroute.report.html import page_json
from costroute.runner import task_from_run
from costroute.store import Store
from tests.conftest import invoke
from tests.outcomes import Answer, answers, labelled, record_run, write_task

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHEAP, STRONG, MID = "fake/cheap", "fake/strong", "fake/mid"
ITEMS = 100
INJECTED = "<script>window.__injected = 1</script><img src=x onerror=alert(1)>"

# How many drawn pixels a canvas has; Chart.js draws on a transparent canvas.
DRAWN_PIXELS = """canvas => {
  const pixels = canvas.getContext("2d")
    .getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) drawn += 1;
  return drawn;
}"""


@dataclass
class Loaded:
    """A report page opened in the browser, with what it logged and fetched."""

    page: Any
    url: str
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def visible_rows(self) -> int:
        rows = self.page.locator("table[data-table=disagreements] tbody tr:visible")
        return int(rows.count())


Opener = Callable[[Path], Loaded]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; scripts/test.sh installs it")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db.sqlite") as opened:
        yield opened


@pytest.fixture
def opened(browser: Any) -> Iterator[Opener]:
    """Opens report files in fresh pages, closed after the test."""
    pages: list[Any] = []

    def opener(path: Path) -> Loaded:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        pages.append(page)
        loaded = Loaded(page=page, url=path.resolve().as_uri())
        page.on("console", lambda m: loaded.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda error: loaded.console.append(f"error: {error}"))
        page.on("request", lambda request: loaded.requests.append(request.url))
        page.goto(loaded.url)
        page.wait_for_selector("body[data-ready=true]", timeout=10_000)
        return loaded

    yield opener
    for page in pages:
        page.close()


def assert_clean(loaded: Loaded) -> None:
    """No console errors or warnings, and no request beyond the file itself."""
    assert [m for m in loaded.console if not m.startswith(("log", "info"))] == []
    foreign = [
        url
        for url in loaded.requests
        if url != loaded.url and not url.startswith("data:")
    ]
    assert foreign == []


def keep_screenshot(loaded: Loaded, name: str) -> None:
    """A full-page screenshot under test-artifacts/, for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    loaded.page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def drawn_charts(loaded: Loaded) -> dict[str, int]:
    charts = loaded.page.locator("[data-chart] canvas")
    return {
        charts.nth(i).evaluate("c => c.closest('[data-chart]').dataset.chart"): int(
            charts.nth(i).evaluate(DRAWN_PIXELS)
        )
        for i in range(charts.count())
    }


def empty_messages(loaded: Loaded) -> dict[str, str]:
    found = loaded.page.locator("[data-empty]")
    return {
        found.nth(i).get_attribute("data-empty"): found.nth(i).inner_text()
        for i in range(found.count())
    }


def _wrong(index: int) -> bool:
    return index % 10 < 3


def three_candidates(tmp_path: Path, store: Store) -> str:
    """A cheap model wrong on 3 items in 10 (unsure, with low log-probabilities
    and an output holding markup), a strong one always right, a middling one."""
    task = write_task(tmp_path, [CHEAP, STRONG, MID], floor=0.9)
    cheap = [(False, INJECTED) if _wrong(i) else (True, "spam") for i in range(ITEMS)]
    logprobs = [-2.0 - i / 100 if _wrong(i) else -0.1 - i / 1000 for i in range(ITEMS)]
    mid = [(i % 7 != 0, "spam" if i % 7 else "ham") for i in range(ITEMS)]
    calls = {
        CHEAP: answers(cheap, "0.001", logprobs=logprobs),
        STRONG: answers(labelled([True] * ITEMS), "0.01"),
        MID: answers(mid, "0.004"),
    }
    return record_run(store, task, calls)


def write_report(store: Store, run_id: str, path: Path, *flags: str) -> Path:
    result = invoke("report", run_id, "--db", str(store.path), "-o", str(path), *flags)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"Wrote {path}")
    return path


def test_the_report_opens_offline_and_draws_every_chart(
    tmp_path: Path, store: Store, opened: Opener
) -> None:
    run_id = three_candidates(tmp_path, store)
    path = write_report(store, run_id, tmp_path / "report.html")

    loaded = opened(path)

    assert_clean(loaded)
    drawn = drawn_charts(loaded)
    assert set(drawn) == {"quality-cost", "cost-per-result", "monthly", "cascade"}
    assert all(pixels > 1000 for pixels in drawn.values()), drawn
    assert empty_messages(loaded) == {}
    keep_screenshot(loaded, "report.png")


def test_the_decision_heads_the_page_with_its_status_and_dials(
    tmp_path: Path, store: Store, opened: Opener
) -> None:
    run_id = three_candidates(tmp_path, store)
    path = write_report(store, run_id, tmp_path / "r.html", "--volume", "20000")

    page = opened(path).page

    sentence = page.locator("[data-sentence]").inner_text()
    assert sentence.startswith("Route spam-triage to the cascade fake/cheap → ")
    assert "a month at 20,000 outputs a month" in sentence
    assert page.locator(".badge").inner_text() == "settled"
    dials = page.locator("ul.dials").inner_text()
    assert "accuracy ≥ 0.9" in dials and "20,000 outputs a month" in dials
    assert "This cascade is the route." in page.locator("#cascade").inner_text()


def test_outputs_with_markup_show_as_text_and_never_run(
    tmp_path: Path, store: Store, opened: Opener
) -> None:
    run_id = three_candidates(tmp_path, store)
    path = write_report(store, run_id, tmp_path / "r.html")

    loaded = opened(path)

    assert loaded.page.evaluate("window.__injected") is None
    first = loaded.page.locator("tr[data-item=i0] pre").nth(2)
    assert first.inner_text() == INJECTED
    assert_clean(loaded)


def test_the_disagreement_filter_narrows_the_rows(
    tmp_path: Path, store: Store, opened: Opener
) -> None:
    run_id = three_candidates(tmp_path, store)
    loaded = opened(write_report(store, run_id, tmp_path / "r.html"))
    page = loaded.page
    # The cheap model is wrong on 30 items, the middling one on 15, together 40.
    assert loaded.visible_rows() == 40
    assert page.locator("#filter-count").inner_text() == "40 of 40 items"

    page.fill("#filter-text", "onerror")
    assert loaded.visible_rows() == 30

    page.fill("#filter-text", "")
    page.select_option("select[data-model='fake/mid']", "wrong")
    assert loaded.visible_rows() == 15

    page.select_option("select[data-model='fake/cheap']", "right")
    assert loaded.visible_rows() == 10
    assert page.locator("#filter-count").inner_text() == "10 of 40 items"

    page.fill("#filter-text", "I1")
    visible = page.locator("table[data-table=disagreements] tbody tr:visible")
    assert visible.count() == 1
    assert visible.first.get_attribute("data-item") == "i14"


def test_a_run_with_one_candidate_says_there_is_nothing_to_compare(
    tmp_path: Path, store: Store, opened: Opener
) -> None:
    task = write_task(tmp_path, [STRONG], floor=0.8)
    run_id = record_run(store, task, {STRONG: answers(labelled([True] * 20), "0.01")})

    loaded = opened(write_report(store, run_id, tmp_path / "r.html"))

    assert_clean(loaded)
    drawn = drawn_charts(loaded)
    assert set(drawn) == {"quality-cost", "cost-per-result", "monthly"}
    assert all(pixels > 500 for pixels in drawn.values())
    assert "two priced candidates" in empty_messages(loaded)["cascade"]
    text = loaded.page.locator("#report").inner_text()
    assert "Only one candidate was measured (fake/strong)" in text
    assert "nothing to disagree on" in text
    keep_screenshot(loaded, "report-one-candidate.png")


def test_an_unpriced_candidate_is_named_and_left_off_the_cost_charts(
    tmp_path: Path, store: Store, opened: Opener
) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], floor=0.8)
    calls = {
        CHEAP: answers(labelled([i % 4 != 0 for i in range(40)]), "0.001"),
        STRONG: answers(labelled([True] * 40), "0.01"),
    }
    prices = {CHEAP: pricing.unpriced(CHEAP)}
    run_id = record_run(store, task, calls, prices)

    loaded = opened(write_report(store, run_id, tmp_path / "r.html"))

    assert_clean(loaded)
    assert set(drawn_charts(loaded)) == {"quality-cost", "cost-per-result", "monthly"}
    text = loaded.page.locator("#report").inner_text()
    assert "fake/cheap is unpriced" in text
    assert "Not plotted: fake/cheap: unpriced" in text
    labels = loaded.page.evaluate(
        "Chart.getChart(document.querySelector('[data-chart=cost-per-result] "
        "canvas')).data.labels"
    )
    assert labels == ["fake/strong ◆"]
    sources = loaded.page.locator("table[data-table=cost-sources]").inner_text()
    assert "unpriced: no price known" in sources
    keep_screenshot(loaded, "report-unpriced.png")


def test_a_run_with_no_results_shows_messages_instead_of_charts(
    tmp_path: Path, store: Store, opened: Opener
) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG])
    run_id = record_run(store, task, {CHEAP: [], STRONG: []})

    loaded = opened(write_report(store, run_id, tmp_path / "r.html"))

    assert_clean(loaded)
    assert drawn_charts(loaded) == {}
    messages = empty_messages(loaded)
    assert set(messages) == {"quality-cost", "cost-per-result", "monthly", "cascade"}
    assert messages["quality-cost"].startswith("Nothing to chart")
    assert loaded.page.locator(".badge").inner_text() == "no candidate"
    decision = loaded.page.locator("#decision").inner_text()
    assert "This run has no results yet" in decision
    keep_screenshot(loaded, "report-no-results.png")


def test_markdown_gives_the_summary_with_a_table(tmp_path: Path, store: Store) -> None:
    run_id = three_candidates(tmp_path, store)

    result = invoke(
        "report",
        run_id,
        "--db",
        str(store.path),
        "--format",
        "markdown",
        "--volume",
        "500",
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("**spam-triage** · run `") and "**settled**" in lines[0]
    assert lines[2].startswith("Route spam-triage to the cascade fake/cheap → ")
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| candidate | eligible | quality [95% CI] |")
    assert len(table) == 2 + 4  # header, rule, three models and the cascade
    assert table[2].startswith("| **fake/cheap -> fake/strong** (route) | yes |")
    dials = "- Dials: floor accuracy ≥ 0.9 · confidence 95% · volume 500 outputs"
    assert any(line.startswith(dials) for line in lines)
    assert any(
        line.startswith("- Cascade fake/cheap → fake/strong (the route)")
        for line in lines
    )
    assert "- Candidates disagree on 40 of 100 items" in result.stdout


def test_markdown_escapes_names_that_hold_markup(tmp_path: Path, store: Store) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], name="spam <b>|triage")
    run_id = record_run(store, task, {STRONG: answers(labelled([True] * 10), "0.01")})

    result = invoke("report", run_id, "--db", str(store.path), "--format", "markdown")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("**spam \\<b>\\|triage** · run")
    assert "<b>" not in result.stdout.replace("\\<b>", "")


def test_a_run_of_1000_items_stays_under_2_mb_and_filters(
    tmp_path: Path, store: Store, opened: Opener
) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG, MID], floor=0.7)
    long = "x" * 3000
    calls = {
        CHEAP: [
            Answer(f"i{n}", n % 2 == 0, Decimal("0.001"), f"cheap {n} {long}")
            for n in range(1000)
        ],
        STRONG: [
            Answer(f"i{n}", True, Decimal("0.01"), f"strong {n} {long}")
            for n in range(1000)
        ],
        MID: [
            Answer(f"i{n}", n % 3 != 0, Decimal("0.004"), f"mid {n} {long}")
            for n in range(1000)
        ],
    }
    run_id = record_run(store, task, calls)

    path = write_report(store, run_id, tmp_path / "big.html")

    assert path.stat().st_size < 2_000_000
    loaded = opened(path)
    assert_clean(loaded)
    assert loaded.visible_rows() == 1000
    loaded.page.fill("#filter-text", "cheap 99")
    assert loaded.visible_rows() == 11  # 99 and 990 to 999


def test_page_json_cannot_close_its_script_element() -> None:
    data = {"output": "</script><!-- <script>x</script> & \u2028"}

    text = page_json(data)

    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == data


def test_an_unknown_run_is_a_usage_error(tmp_path: Path, store: Store) -> None:
    result = invoke("report", "nope", "--db", str(store.path))

    assert result.exit_code == 2
    assert result.stderr.startswith("Error: 'nope' is neither a task file nor a run")


def test_a_missing_store_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("report", "nope", "--db", str(tmp_path / "none.db"))

    assert result.exit_code == 2
    assert result.stderr.startswith("Error: no store at ")


def test_html_goes_to_a_file_named_after_the_run_by_default(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = write_task(tmp_path, [STRONG])
    run_id = record_run(store, task, {STRONG: answers(labelled([True] * 5), "0.01")})
    monkeypatch.chdir(tmp_path)

    result = invoke("report", run_id, "--db", str(store.path))

    assert result.exit_code == 0, result.output
    written = tmp_path / f"report-{run_id}.html"
    assert written.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_the_cascade_sweep_runs_from_no_escalation_to_all(
    tmp_path: Path, store: Store
) -> None:
    run_id = three_candidates(tmp_path, store)
    run = store.run(run_id)
    task = task_from_run(run.task_json, run.task_path)

    report = gather(store, run, task, task.dials, task.floor)

    sweep = report.cascade
    rates = [point["rate"] for point in sweep["points"]]
    assert rates == sorted(rates) and rates[0] == 0.0 and rates[-1] == 1.0
    chosen = [point for point in sweep["points"] if point["chosen"]]
    route = next(c for c in report.candidates if c["route"])
    assert len(chosen) == 1 and route["kind"] == "cascade"
    assert chosen[0]["cost"] == pytest.approx(route["expected"])
    assert chosen[0]["quality"] == pytest.approx(route["quality"])
    # Never escalating is the cheap model alone; always, both models' cost.
    cheap = next(c for c in report.candidates if c["name"] == CHEAP)
    assert sweep["points"][0]["cost"] == pytest.approx(cheap["expected"])
    assert sweep["points"][-1]["cost"] == pytest.approx(0.011)


def test_a_run_without_an_escalation_check_says_why_there_is_no_cascade(
    tmp_path: Path, store: Store
) -> None:
    task = write_task(tmp_path, [CHEAP, STRONG], scorer='kind = "exact"')
    calls = {
        CHEAP: answers(labelled([i % 4 != 0 for i in range(20)]), "0.001"),
        STRONG: answers(labelled([True] * 20), "0.01"),
    }
    run_id = record_run(store, task, calls)

    result = invoke("report", run_id, "--db", str(store.path), "--format", "markdown")

    assert result.exit_code == 0, result.output
    assert "- No cascade: no check a router can run on the cheap output" in (
        result.stdout
    )


def test_the_frontier_keeps_what_buys_more_quality_for_more_cost() -> None:
    def point(name: str, cost: float, quality: float) -> dict[str, Any]:
        return {"name": name, "expected": cost, "quality": quality, "plotted": True}

    candidates = [
        point("a", 1.0, 0.7),
        point("b", 2.0, 0.6),
        point("c", 3.0, 0.9),
        point("d", 0.5, 0.5),
        {"name": "unpriced", "plotted": False},
    ]

    assert frontier(candidates) == ["d", "a", "c"]
