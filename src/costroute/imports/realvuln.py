"""`costroute import realvuln`: recorded scanner runs of the RealVuln benchmark.

The layout (kolega-ai/Real-Vuln-Benchmark):

    ground-truth/<app>/ground-truth.json          known findings and traps
    scan-results/<app>/<scanner>/run-N.json       findings, Semgrep JSON
    scan-results/<app>/<scanner>/run-N.metrics.json   cost_usd, tokens, status
    scan-results/<app>/<scanner>/results.json     a classic tool's single run

Items are the apps, candidates the scanners, results the true positives, so
cost per result is the cost per vulnerability found. Findings are matched by
the benchmark's own rule: same file, one of the acceptable CWEs, and a line in
the known range widened by 10 lines each side.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from costroute import pricing
from costroute.dataset import Item
from costroute.errors import UsageError
from costroute.imports import ImportBatch, Outcome, import_hash, read_json
from costroute.pricing import Price
from costroute.scorers import Score, make_scorer, match_findings
from costroute.store import CallRecord
from costroute.task import Task

LINE_TOLERANCE = 10
MATCH_KEYS = ("file", "cwe")
ALT_KEYS = {"cwe": "acceptable_cwes"}

# Our choice, not the benchmark's: a scanner worth routing to should find at
# least half the known vulnerabilities at a precision of the same order.
FLOOR_F1 = 0.5

MODEL_PREFIX = "realvuln/"

_CWE = re.compile(r"CWE-(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class ScanRun:
    """One scanner's run on one app: the findings file and the metrics file."""

    scanner: str
    app: str
    findings_path: Path | None
    metrics_path: Path | None

    @property
    def model(self) -> str:
        return MODEL_PREFIX + self.scanner


def prepare_realvuln(root: Path, run: int = 1) -> ImportBatch:
    """Read run `run` of every scanner under `root`; raises on any malformed file.

    Nothing is skipped: a file that cannot be read stops the import with its
    name, so a scanner's F1 and cost never silently leave out an app.
    """
    root = root.resolve()
    _check_layout(root)
    items = load_apps(root)
    scan_runs = list(find_runs(root, run, {item.id for item in items}))
    if not scan_runs:
        raise UsageError(
            f"{root}: no scanner has run-{run}.json or run-{run}.metrics.json; "
            "try --run 1"
        )

    models = sorted({scan.model for scan in scan_runs})
    task = realvuln_task(root, models, run)
    prices = {model: _price(model, scan_runs) for model in models}
    by_id = {item.id: item for item in items}
    outcomes = [
        _outcome(scan, by_id[scan.app], run, prices[scan.model]) for scan in scan_runs
    ]
    return ImportBatch(
        task=task,
        items=items,
        prices=list(prices.values()),
        outcomes=outcomes,
        params={"imported_from": str(root), "run": run},
    )


def realvuln_task(root: Path, models: list[str], run: int) -> Task:
    """The task an import measures, built in memory and stored with the run."""
    task = Task.model_validate(
        {
            "name": "realvuln",
            "category": "scanning",
            "description": f"RealVuln scanner runs (run {run}) imported from {root}",
            "dataset": {"path": "ground-truth", "target": "findings", "id": "app"},
            "prompt": {"user": "Find the vulnerabilities in {{app}} ({{repo_url}})."},
            "scorer": {
                "kind": "findings",
                "keys": list(MATCH_KEYS),
                "line_field": "line",
                "line_tolerance": LINE_TOLERANCE,
                "alt_keys": ALT_KEYS,
            },
            "floor": {"metric": "f1", "min": FLOOR_F1},
            "candidates": [{"model": model} for model in models],
            "path": root / "ground-truth",
        }
    )
    make_scorer(task.scorer, task.base_dir)
    return task


def _check_layout(root: Path) -> None:
    missing = [
        name for name in ("ground-truth", "scan-results") if not (root / name).is_dir()
    ]
    if missing:
        raise UsageError(
            f"{root}: no {missing[0]}/ folder; point at a RealVuln checkout, the "
            "folder holding ground-truth/ and scan-results/"
        )


# Ground truth


def load_apps(root: Path) -> list[Item]:
    """One item per app under ground-truth/, its known findings the target."""
    items = []
    for position, folder in enumerate(_folders(root / "ground-truth"), start=1):
        path = folder / "ground-truth.json"
        if not path.is_file():
            raise UsageError(f"{folder}: no ground-truth.json")

        data = read_json(path)
        findings = data.get("findings")
        if not isinstance(findings, list):
            raise UsageError(f"{path}: no 'findings' list")
        truth = [_known(path, index, entry) for index, entry in enumerate(findings)]
        fields = {
            "app": folder.name,
            "repo_url": data.get("repo_url"),
            "commit_sha": data.get("commit_sha"),
            "findings": truth,
        }
        items.append(Item(id=folder.name, line=position, fields=fields, target=truth))
    if not items:
        raise UsageError(f"{root / 'ground-truth'}: no apps")
    return items


def _known(path: Path, index: int, entry: Any) -> dict[str, Any]:
    """A ground-truth finding in the shape the findings matcher reads."""
    where = f"{path}: findings[{index}]"
    if not isinstance(entry, dict):
        raise UsageError(f"{where} is not an object")

    location = entry.get("location") or {}
    cwes = entry.get("acceptable_cwes")
    if not isinstance(entry.get("file"), str) or not isinstance(cwes, list):
        raise UsageError(f"{where} needs 'file' and an 'acceptable_cwes' list")
    if not isinstance(entry.get("is_vulnerable"), bool):
        raise UsageError(f"{where} needs 'is_vulnerable' true or false")
    return {
        "id": entry.get("id", str(index)),
        "file": app_path(entry["file"]),
        "line_start": _line(where, location.get("start_line")),
        "line_end": _line(where, location.get("end_line")),
        "acceptable_cwes": [cwe for cwe in map(cwe_ref, cwes) if cwe],
        "primary_cwe": entry.get("primary_cwe"),
        "is_vulnerable": entry["is_vulnerable"],
    }


def _line(where: str, value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise UsageError(f"{where}: line {value!r} is not a whole number")


def app_path(path: str) -> str:
    """A path from the app's root, compared whole as the benchmark does.

    The benchmark strips "./" and leading slashes and compares paths exactly.
    Rooting both sides at "/" makes the matcher do the same, instead of
    letting "project/x.py" match "target/project/x.py" by its tail.
    """
    path = path.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return "/" + path.lstrip("/")


def cwe_ref(value: Any) -> str | None:
    """The "CWE-89" that starts "CWE-89: Improper Neutralization …"; else None."""
    match = _CWE.match(str(value).strip())
    return f"CWE-{int(match[1])}" if match else None


# Scan results


def find_runs(root: Path, run: int, apps: set[str]) -> Iterator[ScanRun]:
    """Every scanner's run `run` on every app where it left findings or metrics.

    A classic tool (semgrep, snyk, sonarqube) ran once and left results.json
    without metrics; that file is its run 1.
    """
    for app_folder in _folders(root / "scan-results"):
        if app_folder.name not in apps:
            raise UsageError(
                f"{app_folder}: no ground-truth/{app_folder.name}/ground-truth.json "
                "for this app; add it or remove the folder"
            )

        for folder in _folders(app_folder):
            scan = _scan_run(folder, app_folder.name, run)
            if scan is not None:
                yield scan


def _scan_run(folder: Path, app: str, run: int) -> ScanRun | None:
    findings: Path | None = folder / f"run-{run}.json"
    metrics: Path | None = folder / f"run-{run}.metrics.json"
    single = folder / "results.json"
    has_runs = any(folder.glob("run-*.json"))
    if run == 1 and not has_runs and single.is_file():
        findings, metrics = single, None

    findings = findings if findings is not None and findings.is_file() else None
    metrics = metrics if metrics is not None and metrics.is_file() else None
    if findings is None and metrics is None:
        return None
    return ScanRun(folder.name, app, findings, metrics)


def read_findings_file(path: Path) -> list[dict[str, Any]]:
    """A Semgrep JSON file as findings, one per reported CWE.

    That is how the benchmark counts them; a result without a path or a CWE is
    not a finding.
    """
    data = read_json(path)
    results = data.get("results")
    if not isinstance(results, list):
        raise UsageError(f"{path}: no 'results' list; expected Semgrep JSON output")

    findings = []
    for index, result in enumerate(results):
        findings += _findings(path, index, result)
    return findings


def _findings(path: Path, index: int, result: Any) -> list[dict[str, Any]]:
    where = f"{path}: results[{index}]"
    if not isinstance(result, dict):
        raise UsageError(f"{where} is not an object")
    if not result.get("path"):
        return []

    start = result.get("start") or {}
    line = start.get("line") if isinstance(start, dict) else None
    if line is not None and (isinstance(line, bool) or not isinstance(line, int)):
        raise UsageError(f"{where}: start.line {line!r} is not a whole number")
    metadata = (result.get("extra") or {}).get("metadata") or {}
    cwes = metadata.get("cwe") or []
    cwes = [cwes] if isinstance(cwes, str) else cwes
    if not isinstance(cwes, list):
        raise UsageError(f"{where}: extra.metadata.cwe is neither a string nor a list")

    file = app_path(str(result["path"]))
    rule = result.get("check_id")
    refs = [cwe for cwe in map(cwe_ref, cwes) if cwe]
    return [{"file": file, "line": line, "cwe": cwe, "rule": rule} for cwe in refs]


@dataclass(frozen=True)
class Metrics:
    """What a run's metrics file says it cost and how it ended."""

    cost_usd: Decimal
    failure: str | None
    input_tokens: int
    output_tokens: int
    latency_ms: float


def read_metrics(path: Path) -> Metrics:
    """A run's metrics; any exit status but "success" marks the run failed."""
    data = read_json(path)
    cost = data.get("cost_usd")
    if isinstance(cost, bool) or not isinstance(cost, int | Decimal) or cost < 0:
        raise UsageError(f"{path}: cost_usd {cost!r} is not an amount in USD")

    status = data.get("exit_status")
    if not isinstance(status, str):
        raise UsageError(f"{path}: no exit_status")
    failure = None
    if status != "success":
        failure = str(data.get("error_message") or status)
    seconds = data.get("wall_clock_seconds") or 0
    return Metrics(
        cost_usd=Decimal(cost),
        failure=failure,
        input_tokens=_count(data.get("input_tokens")),
        output_tokens=_count(data.get("output_tokens")),
        latency_ms=float(seconds) * 1000,
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _folders(path: Path) -> list[Path]:
    return sorted(
        child
        for child in path.iterdir()
        if child.is_dir() and not child.name.startswith(".")
    )


# Outcomes


def _outcome(scan: ScanRun, item: Item, run: int, price: Price) -> Outcome:
    metrics = read_metrics(scan.metrics_path) if scan.metrics_path else None
    reported = read_findings_file(scan.findings_path) if scan.findings_path else []
    failure = _failure(scan, metrics, run)
    if failure is not None:
        # A failed run costs money and finds nothing.
        reported = []

    call = CallRecord(
        run_id="",
        item_id=scan.app,
        model=scan.model,
        repeat=0,
        request_hash=import_hash("realvuln", scan.scanner, scan.app, str(run)),
        status="ok" if failure is None else "error",
        cost_kind=price.cost_kind,
        output=json.dumps({"findings": reported}, separators=(",", ":")),
        error=failure,
        input_tokens=metrics.input_tokens if metrics else 0,
        output_tokens=metrics.output_tokens if metrics else 0,
        cost_usd=metrics.cost_usd if metrics else None,
        spent_usd=Decimal(0) if metrics else None,
        provider_cost_usd=metrics.cost_usd if metrics else None,
        latency_ms=metrics.latency_ms if metrics else 0.0,
    )
    return Outcome(call=call, score=score_findings(reported, item.target))


def _failure(scan: ScanRun, metrics: Metrics | None, run: int) -> str | None:
    if metrics is not None and metrics.failure is not None:
        return metrics.failure
    if scan.findings_path is None:
        return f"the run left no run-{run}.json"
    return None


def score_findings(
    reported: list[dict[str, Any]], truth: list[dict[str, Any]]
) -> Score:
    """True positives are the results; every other report is a false positive.

    The benchmark counts a second report of a vulnerability already found as a
    false positive, where costroute's findings scorer ignores it, so the
    duplicates are added to the false positives here.
    """
    match = match_findings(
        reported,
        truth,
        keys=MATCH_KEYS,
        line_field="line",
        tolerance=LINE_TOLERANCE,
        alt_keys=ALT_KEYS,
    )
    fp = match.fp + match.duplicates
    detail = f"tp {match.tp}, fp {fp}, fn {match.fn}"
    if match.duplicates:
        detail += (
            f" (repeats of found vulnerabilities counted as fp {match.duplicates})"
        )
    return Score(
        results=float(match.tp),
        correct=fp == 0 and match.fn == 0,
        tp=match.tp,
        fp=fp,
        fn=match.fn,
        answer=f"findings reported: {len(reported)}",
        detail=detail,
    )


def _price(model: str, scan_runs: list[ScanRun]) -> Price:
    """Costs as the benchmark recorded them; a run without metrics has none."""
    scans = [scan for scan in scan_runs if scan.model == model]
    if any(scan.metrics_path is None for scan in scans):
        return pricing.unpriced(model)
    return pricing.reported_price(model)
