"""Scorers read real outputs the way a task file configures them."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from costroute.dataset import Item
from costroute.errors import UsageError
from costroute.scorers import Score, Scorer, make_scorer, match_findings, sandbox
from costroute.scorers.code import extract_code
from costroute.task import ScorerConfig


def build(kind: str, base_dir: Path = Path("."), **options: Any) -> Scorer:
    return make_scorer(ScorerConfig(kind=kind, **options), base_dir)


def item(target: Any, **fields: Any) -> Item:
    return Item(id="q1", line=3, fields={**fields, "target": target}, target=target)


def grade(scorer: Scorer, output: str, target: Any, **fields: Any) -> Score:
    return scorer.score(output, item(target, **fields))


# exact


@pytest.mark.parametrize(
    ("output", "target", "correct"),
    [
        ("Paris", "Paris", True),
        ("  paris.\n", "Paris", True),
        ("U.S.A.", "usa", True),
        ("New   York", "new york", True),
        ("Paris, France", "Paris", False),
        ("42", 42, True),
    ],
)
def test_exact_normalises_case_space_and_punctuation(
    output: str, target: Any, correct: bool
) -> None:
    assert grade(build("exact"), output, target).correct is correct


def test_exact_blank_output_is_a_miss_not_a_false_positive() -> None:
    score = grade(build("exact"), "   ", "Paris")

    assert (score.answer, score.tp, score.fp, score.fn) == (None, 0, 0, 1)


def test_exact_wrong_answer_counts_as_false_positive() -> None:
    score = grade(build("exact"), "Lyon", "Paris")

    assert (score.results, score.tp, score.fp, score.fn) == (0.0, 0, 1, 1)


# label

LABELS = ["spam", "ham", "not spam"]


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        ("spam", "spam"),
        ("This is SPAM, not ham.", "spam"),
        ("Ham. Although it mentions spam.", "ham"),
        ("Verdict: not spam", "not spam"),
        ("Verdict: not\n  spam", "not spam"),
        ("The hamster spammed", None),
        ("I cannot tell.", None),
    ],
)
def test_label_answer_is_the_first_label_as_whole_words(
    output: str, answer: str | None
) -> None:
    assert grade(build("label", labels=LABELS), output, "spam").answer == answer


def test_label_compares_normalised_answer_with_target() -> None:
    scorer = build("label", labels=["Spam", "Ham"])

    assert grade(scorer, "ham!", "HAM").correct
    assert not grade(scorer, "spam, not ham", "ham").correct


def test_label_without_a_label_in_output_is_unanswered() -> None:
    score = grade(build("label", labels=LABELS), "No idea.", "spam")

    assert (score.correct, score.tp, score.fp, score.fn) == (False, 0, 0, 1)


@pytest.mark.parametrize(
    ("output", "target", "counts"),
    [
        ("spam", "spam", (1, 0, 0)),
        ("spam", "ham", (0, 1, 0)),
        ("ham", "spam", (0, 0, 1)),
        ("ham", "ham", (0, 0, 0)),
        ("no idea", "spam", (0, 0, 1)),
        ("no idea", "ham", (0, 0, 0)),
    ],
)
def test_label_positive_class_counts(
    output: str, target: str, counts: tuple[int, int, int]
) -> None:
    scorer = build("label", labels=["spam", "ham"], positive="spam")
    score = grade(scorer, output, target)

    assert (score.tp, score.fp, score.fn) == counts
    assert score.correct is (output == target)


# regex


@pytest.mark.parametrize(
    ("options", "output", "answer"),
    [
        ({"pattern": r"Answer:\s*(\w+)"}, "Thinking... Answer: B", "B"),
        ({"pattern": r"[A-D]\)"}, "I pick C) because", "C)"),
        ({"pattern": r"answer:\s*(\w+)", "flags": "i"}, "ANSWER: b", "b"),
        ({"pattern": r"answer:\s*(\w+)"}, "ANSWER: b", None),
    ],
)
def test_regex_answer_is_group_one_or_whole_match(
    options: dict[str, str], output: str, answer: str | None
) -> None:
    assert grade(build("regex", **options), output, "b").answer == answer


def test_regex_compares_normalised_answer_with_target() -> None:
    scorer = build("regex", pattern=r"Answer: (.+)")

    assert grade(scorer, "Answer: Paris.", "paris").correct
    assert not grade(scorer, "Answer: Lyon", "paris").correct


# number


@pytest.mark.parametrize(
    ("output", "target", "correct"),
    [
        ("The total is 1,234,567 units.", 1234567, True),
        ("It is -3.5 degrees", "-3.5", True),
        ("About 6.02e23 atoms", 6.02e23, True),
        ("Avogadro: 6.022E+23", "6.022e23", True),
        ("COVID-19 cases: 7", 19, True),
        ("x = .5", 0.5, True),
        ("Answer: 100", 101, False),
        ("Answer: 100.0", 100, True),
        ("It costs $1,000", "1,000", True),
        ("0.1 + 0.2 = 0.30000000000000004", 0.1, True),
    ],
)
def test_number_reads_the_first_number(output: str, target: Any, correct: bool) -> None:
    assert grade(build("number"), output, target).correct is correct


@pytest.mark.parametrize(
    ("options", "output", "target", "correct"),
    [
        ({"abs_tol": 0.01}, "pi is 3.14159", 3.15, True),
        ({"abs_tol": 0.001}, "pi is 3.14159", 3.15, False),
        ({"rel_tol": 0.01}, "roughly 3,170", 3141.6, True),
        ({"rel_tol": 0.001}, "roughly 3,170", 3141.6, False),
        ({"abs_tol": 1, "rel_tol": 0}, "10", 11, True),
        ({"abs_tol": 1, "rel_tol": 0}, "10", 11.5, False),
    ],
)
def test_number_tolerances(
    options: dict[str, float], output: str, target: float, correct: bool
) -> None:
    assert grade(build("number", **options), output, target).correct is correct


def test_number_large_integers_compare_exactly() -> None:
    scorer = build("number")

    assert not grade(scorer, "12345678901234567891", 12345678901234567890).correct


def test_number_without_number_is_unanswered() -> None:
    score = grade(build("number"), "I do not know", 4)

    assert (score.answer, score.fp, score.fn, score.detail) == (
        None,
        0,
        1,
        "no number in the output",
    )


def test_number_target_that_is_not_a_number_names_the_item() -> None:
    with pytest.raises(UsageError, match=r"item 'q1' \(line 3\): target 'four'"):
        grade(build("number"), "4", "four")


# json

FENCED = """Here is the record:

```json
{"name": "Ada", "amount": 12.5, "notes": "extra"}
```
Anything else?"""


@pytest.mark.parametrize(
    ("output", "correct"),
    [
        (FENCED, True),
        ('Sure! {"amount": 12.5, "name": "Ada"} done', True),
        ('{"name": "Ada", "amount": 13}', False),
        ('prefix {not json} then {"name": "Ada", "amount": 12.5}', True),
        ("no json here", False),
    ],
)
def test_json_compares_named_fields(output: str, correct: bool) -> None:
    scorer = build("json", fields=["name", "amount"])
    target = {"name": "Ada", "amount": 12.5}

    assert grade(scorer, output, target).correct is correct


def test_json_detail_names_differing_fields() -> None:
    scorer = build("json", fields=["name", "amount", "currency"])
    target = '{"name": "Ada", "amount": 12.5, "currency": "EUR"}'
    score = grade(scorer, '{"name": "Ada", "amount": 12, "currency": null}', target)

    assert not score.correct
    assert score.detail == "fields differ: amount, currency"


def test_json_without_fields_compares_the_whole_object() -> None:
    scorer = build("json")

    assert grade(
        scorer, FENCED, {"name": "Ada", "amount": 12.5, "notes": "extra"}
    ).correct
    score = grade(scorer, FENCED, {"name": "Ada", "amount": 12.5})
    assert score.detail == "fields differ: notes"


def test_json_true_is_not_one() -> None:
    assert not grade(build("json"), '{"ok": 1}', {"ok": True}).correct
    assert grade(build("json"), '{"ok": 1.0}', {"ok": 1}).correct


def test_json_target_missing_a_named_field_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="the target has no field 'amount'"):
        grade(build("json", fields=["amount"]), '{"amount": 1}', {"name": "Ada"})


# findings

VULN = {"file": "src/app.py", "cwe": "CWE-79", "line_start": 20, "line_end": 25}
TRAP = {"file": "src/db.py", "cwe": "CWE-89", "line": 40, "is_vulnerable": False}


def report(
    file: str = "src/app.py", cwe: Any = "CWE-79", line: int = 22
) -> dict[str, Any]:
    return {"file": file, "cwe": cwe, "line": line}


def counts(
    reported: list[dict[str, Any]], truth: list[dict[str, Any]], **rule: Any
) -> tuple[int, int, int]:
    rule = {"keys": ["file", "cwe"], "tolerance": 10, **rule}
    match = match_findings(reported, truth, **rule)
    return match.tp, match.fp, match.fn


@pytest.mark.parametrize(
    ("line", "matched"),
    [(9, False), (10, True), (22, True), (35, True), (36, False)],
)
def test_findings_line_range_widened_by_tolerance(line: int, matched: bool) -> None:
    expected = (1, 0, 0) if matched else (0, 1, 1)

    assert counts([report(line=line)], [VULN]) == expected


@pytest.mark.parametrize("cwe", ["CWE-79", "79", 79, "cwe-079", ["CWE-20", "CWE-79"]])
def test_findings_cwe_ids_compare_by_number(cwe: Any) -> None:
    assert counts([report(cwe=cwe)], [VULN]) == (1, 0, 0)


@pytest.mark.parametrize(
    "truth_cwes",
    [
        {"cwe": ["CWE-79", "CWE-80"]},
        {"cwe": "CWE-79", "cwes": ["CWE-80"]},
        {"cwe": "CWE-79", "acceptable_cwes": ["CWE-80", "CWE-116"]},
    ],
)
def test_findings_truth_may_list_acceptable_cwes(truth_cwes: dict[str, Any]) -> None:
    truth = [{**VULN, **truth_cwes}]
    alt_keys = {"cwe": "acceptable_cwes"}

    assert counts([report(cwe="CWE-80")], truth, alt_keys=alt_keys) == (1, 0, 0)
    assert counts([report(cwe="CWE-89")], truth, alt_keys=alt_keys) == (0, 1, 1)


@pytest.mark.parametrize(
    ("file", "matched"),
    [
        ("./src/app.py", True),
        ("/home/ci/repo/src/app.py", True),
        ("app.py", True),
        ("src\\app.py", True),
        ("lib/app.py", False),
        ("src/app.pyc", False),
    ],
)
def test_findings_paths_compare_normalised(file: str, matched: bool) -> None:
    assert counts([report(file=file)], [VULN])[0] == int(matched)


def test_findings_report_on_a_trap_is_a_false_positive() -> None:
    match = match_findings(
        [report(), report(file="src/db.py", cwe="89", line=45)],
        [VULN, TRAP],
        keys=["file", "cwe"],
        tolerance=10,
    )

    assert (match.tp, match.fp, match.fn, match.trap_hits) == (1, 1, 0, 1)
    assert match.false_positives == (1,)


def test_findings_duplicate_report_is_ignored() -> None:
    match = match_findings(
        [report(line=21), report(line=24), report(file="src/other.py")],
        [VULN],
        keys=["file", "cwe"],
        tolerance=10,
    )

    assert (match.tp, match.fp, match.fn, match.duplicates) == (1, 1, 0, 1)
    assert match.pairs == ((0, 0),)


def test_findings_report_on_a_vulnerability_and_a_trap_is_not_fp() -> None:
    trap = {"file": "src/app.py", "line": 30, "is_vulnerable": False}

    match = match_findings(
        [report(line=22), report(line=28)], [VULN, trap], keys=["file"], tolerance=10
    )

    counted = (match.tp, match.fp, match.fn, match.duplicates, match.trap_hits)
    assert counted == (1, 0, 0, 1, 0)


def test_findings_pairs_as_many_vulnerabilities_as_possible() -> None:
    near = {**VULN, "line_start": 30, "line_end": 30}
    # The first report lies nearest the first truth, the only one the second
    # report can match, so pairing in report order alone would miss one.
    reported = [report(line=24), report(line=14)]

    match = match_findings(reported, [VULN, near], keys=["file"], tolerance=10)

    assert (match.tp, match.fp, match.fn) == (2, 0, 0)
    assert match.pairs == ((0, 1), (1, 0))


def test_findings_missed_vulnerabilities_are_false_negatives() -> None:
    other = {"file": "src/auth.py", "cwe": "CWE-287", "line": 5}

    match = match_findings([report()], [VULN, other, TRAP], keys=["file", "cwe"])

    assert (match.tp, match.fp, match.fn, match.missed) == (1, 0, 1, (1,))


FINDINGS_OUTPUT = """I found these:

```json
{"findings": [
  {"file": "./src/app.py", "cwe": "CWE-79", "line": 31},
  {"file": "src/app.py", "cwe": "CWE-79", "line": 21},
  {"file": "src/db.py", "cwe": "CWE-89", "line": 38}
]}
```"""


def test_findings_scorer_results_are_true_positives() -> None:
    scorer = build("findings", keys=["file", "cwe"], line_tolerance=10)
    score = grade(scorer, FINDINGS_OUTPUT, [VULN, TRAP])

    assert (score.results, score.tp, score.fp, score.fn) == (1.0, 1, 1, 0)
    assert not score.correct
    assert score.answer == "findings reported: 3"
    assert score.detail == "tp 1, fp 1, fn 0, duplicates ignored 1, trap hits 1"


def test_findings_scorer_reads_a_bare_list_and_json_target() -> None:
    scorer = build("findings", keys=["file"], line_tolerance=0)
    output = 'Result: [{"file": "src/app.py", "line": 25}]'

    score = grade(
        scorer, output, '[{"file": "src/app.py", "line_start": 20, "line_end": 25}]'
    )

    assert score.correct
    assert score.results == 1.0


def test_findings_scorer_without_a_list_reads_no_findings() -> None:
    score = grade(build("findings"), "No vulnerabilities found.", [VULN])

    assert (score.answer, score.tp, score.fp, score.fn) == (None, 0, 0, 1)
    assert score.detail.endswith("no findings list in the output, read as none")


def test_findings_scorer_with_no_truth_and_no_reports_is_correct() -> None:
    assert grade(build("findings"), '{"findings": []}', []).correct


# python


def write(folder: Path, name: str, source: str) -> None:
    (folder / name).write_text(textwrap.dedent(source), encoding="utf-8")


@pytest.mark.parametrize(
    ("body", "output", "expected"),
    [
        ("return output.strip() == target", "yes ", (1.0, True, 1, 0, 0)),
        ("return output == target", "no", (0.0, False, 0, 1, 1)),
        ("return 0.5", "half", (0.5, False, 0, 1, 1)),
        ("return 1", "all", (1.0, True, 1, 0, 0)),
        ("return {'results': 3, 'correct': True, 'tp': 3}", "x", (3.0, True, 3, 0, 0)),
        ("return {'correct': False, 'answer': 'B'}", "B", (0.0, False, 0, 1, 1)),
    ],
)
def test_python_function_return_values(
    tmp_path: Path, body: str, output: str, expected: tuple[Any, ...]
) -> None:
    write(tmp_path, "checks.py", f"def grade(output, fields, target):\n    {body}\n")
    score = grade(build("python", tmp_path, function="checks:grade"), output, "yes")

    assert (score.results, score.correct, score.tp, score.fp, score.fn) == expected


def test_python_function_sees_fields_and_may_return_a_score(tmp_path: Path) -> None:
    write(tmp_path, "helper.py", "WANTED = 'question'\n")
    write(
        tmp_path,
        "checks.py",
        """
        from costroute.scorers import Score
        from helper import WANTED

        def grade(output, fields, target):
            return Score(results=1.0, correct=True, answer=fields[WANTED])
        """,
    )
    scorer = build("python", tmp_path, function="checks:grade")

    assert scorer.score("x", item("t", question="why?")).answer == "why?"


def test_python_modules_of_the_same_name_in_two_tasks_stay_apart(
    tmp_path: Path,
) -> None:
    scorers = []
    for verdict in ("True", "False"):
        folder = tmp_path / verdict
        folder.mkdir()
        write(folder, "checks.py", f"def grade(o, f, t):\n    return {verdict}\n")
        scorers.append(build("python", folder, function="checks:grade"))

    assert [grade(scorer, "x", "y").correct for scorer in scorers] == [True, False]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return 'yes'", "returned 'yes'; return a bool"),
        ("return 1.5", "returned 1.5"),
        ("return {'score': 1}", "returned a dict with keys \\['score'\\]"),
        ("return {'results': -1}", "returned results=-1"),
        ("raise KeyError('label')", "raised KeyError"),
    ],
)
def test_python_bad_return_is_a_clear_error(
    tmp_path: Path, body: str, message: str
) -> None:
    write(tmp_path, "checks.py", f"def grade(output, fields, target):\n    {body}\n")
    scorer = build("python", tmp_path, function="checks:grade")

    with pytest.raises(UsageError, match=rf"item 'q1' \(line 3\): .*{message}"):
        grade(scorer, "x", "y")


@pytest.mark.parametrize(
    ("source", "function", "message"),
    [
        (None, "checks:grade", "cannot import 'checks'"),
        ("import not_a_module_anywhere\n", "checks:grade", "ModuleNotFoundError"),
        (
            "def other(o, f, t):\n    return True\n",
            "checks:grade",
            "no function 'grade'",
        ),
        ("", "checks.grade", "needs the form 'module:function'"),
    ],
)
def test_python_import_failures_name_the_function(
    tmp_path: Path, source: str | None, function: str, message: str
) -> None:
    if source is not None:
        write(tmp_path, "checks.py", source)

    with pytest.raises(UsageError, match=rf"function = '{function}'.*{message}"):
        build("python", tmp_path, function=function)


# code

SOLUTION = """Here you go:

```python
def add(a, b):
    return a + b
```

```python
print(add(1, 2))
```"""

ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"


def test_code_extraction_prefers_the_first_python_block() -> None:
    assert extract_code(SOLUTION) == "def add(a, b):\n    return a + b"
    assert extract_code("```\nx = 1\n```") == "x = 1"
    assert extract_code("```python\nx = 1") == "x = 1"
    assert extract_code("x = 1\n") == "x = 1"


@pytest.mark.parametrize(
    ("output", "correct", "detail"),
    [
        (SOLUTION, True, "passed"),
        ("def add(a, b):\n    return a - b", False, "AssertionError"),
        ("def add(a, b) return a", False, "SyntaxError"),
        (
            "import sys\ndef add(a, b):\n    return a + b\nsys.exit(0)",
            False,
            "SystemExit",
        ),
        ("", False, "NameError: name 'add' is not defined"),
    ],
)
def test_code_runs_the_item_tests(output: str, correct: bool, detail: str) -> None:
    score = grade(build("code"), output, None, tests=ADD_TESTS)

    assert score.correct is correct
    assert score.detail.startswith(detail)


def test_code_infinite_loop_hits_the_timeout() -> None:
    scorer = build("code", timeout_s=0.5)
    score = grade(
        scorer, "def add(a, b):\n    while True:\n        pass", None, tests=ADD_TESTS
    )

    assert (score.correct, score.detail) == (False, "timeout")


def test_code_memory_is_capped() -> None:
    scorer = build("code", memory_mb=128)
    code = "def add(a, b):\n    return len(bytearray(512 * 2**20))"

    score = grade(scorer, code, None, tests=ADD_TESTS)

    assert score.detail == "MemoryError"


def test_code_sees_no_keys_and_a_fresh_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-candidates")
    # Python itself may add LC_CTYPE when it coerces the C locale to UTF-8.
    tests = (
        "import os\n"
        "assert set(os.environ) <= {'PATH', 'LC_CTYPE'}, sorted(os.environ)\n"
        "assert sorted(os.listdir()) == ['candidate.py', 'runner.py']\n"
    )

    score = grade(build("code"), "", None, tests=tests)

    assert score.correct, score.detail


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)
        yield server


@pytest.mark.parametrize("jail", ["unshare if it works here", "socket stub"])
def test_code_cannot_reach_the_network(
    listener: socket.socket, jail: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if jail == "socket stub":
        monkeypatch.setattr(sandbox, "network_jail", lambda: None)
    port = listener.getsockname()[1]
    code = (
        "import socket\n"
        f"conn = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "conn.sendall(b'leak')\n"
    )

    score = grade(build("code"), code, None, tests="assert True")

    assert not score.correct
    assert "Error" in score.detail
    with pytest.raises(TimeoutError):
        listener.accept()
    # The listener itself works, so the refusal above came from the sandbox.
    with socket.create_connection(listener.getsockname()):
        connection, _ = listener.accept()
        connection.close()


def test_code_item_without_tests_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no test code in field 'checks'"):
        grade(build("code", tests_field="checks"), "x = 1", None, tests="assert x")


# options


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        (
            "label",
            {},
            "kind = 'label' needs labels = \\[...\\]; add the list of allowed answers",
        ),
        ("label", {"labels": []}, "needs labels to be a non-empty list"),
        ("label", {"labels": ["a", 2]}, "every entry of labels"),
        (
            "label",
            {"labels": ["a"], "positive": "b"},
            "positive = 'b', which is not one",
        ),
        ("label", {"labels": ["a"], "lables": ["a"]}, "has no option 'lables'"),
        ("exact", {"pattern": "x"}, "has no option 'pattern'"),
        ("regex", {}, "needs pattern = "),
        ("regex", {"pattern": "(unclosed"}, "pattern that does not compile"),
        ("regex", {"pattern": "x", "flags": "iq"}, "unknown flag 'q'"),
        ("number", {"abs_tol": -1}, "abs_tol to be a number of 0 or more"),
        ("number", {"rel_tol": "0.1"}, "rel_tol to be a number"),
        ("json", {"fields": "name"}, "fields to be a non-empty list"),
        ("findings", {"line_tolerance": 2.5}, "line_tolerance to be a whole number"),
        ("findings", {"alt_keys": {"cwe": 1}}, "alt_keys to be a table of strings"),
        ("python", {}, "needs function = "),
        ("code", {"timeout_s": 0}, "timeout_s to be more than 0"),
        ("code", {"memory_mb": 10}, "memory_mb of at least 64"),
        ("judge", {}, "kind = 'judge' needs model"),
    ],
)
def test_bad_options_are_usage_errors(
    kind: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=rf"^\[scorer\] .*{message}"):
        build(kind, **options)
