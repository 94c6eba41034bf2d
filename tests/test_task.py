"""Bad input gets `Error: …` with the file, the line and the fix; exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import invoke, write_task
from tests.fakeserver import FakeServer


def _validate(task: Path) -> tuple[int, str]:
    result = invoke("validate", str(task))
    return result.exit_code, result.stderr


def test_validate_accepts_a_good_task(tmp_path: Path) -> None:
    task = write_task(tmp_path, "http://127.0.0.1:9/v1")

    result = invoke("validate", str(task))

    assert result.exit_code == 0
    assert "12 items" in result.stdout


def test_broken_toml_names_the_line(tmp_path: Path) -> None:
    task = tmp_path / "task.toml"
    task.write_text('name = "x"\n[dataset\npath = "a"\n')

    code, stderr = _validate(task)

    assert code == 2
    assert stderr.startswith("Error: ")
    assert "task.toml: not valid TOML" in stderr and "line 2" in stderr
    assert "Traceback" not in stderr


def test_missing_task_file(tmp_path: Path) -> None:
    code, stderr = _validate(tmp_path / "nope.toml")

    assert code == 2 and "no such task file" in stderr


def test_unknown_key_and_missing_section(tmp_path: Path) -> None:
    task = tmp_path / "task.toml"
    task.write_text(
        'name = "x"\n[dataset]\npath = "i.jsonl"\ntarget = "label"\ntargte = 1\n'
        '[scorer]\nkind = "label"\nlabels = ["a"]\n[[candidates]]\nmodel = "openai/x"\n'
    )

    code, stderr = _validate(task)

    assert code == 2
    assert "dataset.targte: unknown key" in stderr
    assert "prompt: required key is missing" in stderr


def test_unknown_scorer_kind(tmp_path: Path) -> None:
    task = write_task(tmp_path, "http://127.0.0.1:9/v1")
    task.write_text(task.read_text().replace('kind = "label"', 'kind = "fuzzy"'))

    code, stderr = _validate(task)

    assert code == 2 and "scorer.kind" in stderr and "'label'" in stderr


def test_model_ref_without_provider(tmp_path: Path) -> None:
    task = write_task(tmp_path, "http://127.0.0.1:9/v1")
    task.write_text(task.read_text().replace('"fake/cheap"', '"cheap"'))

    code, stderr = _validate(task)

    assert code == 2 and "needs a provider prefix" in stderr


def test_row_without_target_names_file_and_line(tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "x", "label": "ham"}, {"id": "b", "text": "y"}]
    task = write_task(tmp_path, "http://127.0.0.1:9/v1", items=rows)

    code, stderr = _validate(task)

    assert code == 2
    assert "items.jsonl line 2: no field 'label'" in stderr


def test_template_naming_a_missing_field(tmp_path: Path) -> None:
    rows = [{"id": "a", "body": "x", "label": "ham"}]
    task = write_task(tmp_path, "http://127.0.0.1:9/v1", items=rows)

    code, stderr = _validate(task)

    assert code == 2
    assert "items.jsonl line 1: the prompt uses {{text}}" in stderr


def test_invalid_json_row_and_duplicate_ids(tmp_path: Path) -> None:
    task = write_task(tmp_path, "http://127.0.0.1:9/v1")
    (tmp_path / "items.jsonl").write_text(
        '{"id": "a", "text": "x", "label": "ham"}\n{oops\n'
    )

    code, stderr = _validate(task)
    assert code == 2 and "items.jsonl line 2: not valid JSON" in stderr

    row = json.dumps({"id": "a", "text": "x", "label": "ham"})
    (tmp_path / "items.jsonl").write_text(f"{row}\n{row}\n")
    code, stderr = _validate(task)
    assert code == 2 and "line 2: id 'a' repeats line 1" in stderr


def test_csv_dataset(tmp_path: Path, fake: FakeServer) -> None:
    task = write_task(tmp_path, fake.base_url)
    (tmp_path / "items.csv").write_text(
        "id,text,label\na,hello,ham\nb,win money,spam\n"
    )
    task.write_text(task.read_text().replace('"items.jsonl"', '"items.csv"'))

    result = invoke("validate", str(task))

    assert result.exit_code == 0 and "2 items" in result.stdout


def test_unknown_provider_is_a_usage_error(tmp_path: Path, fake: FakeServer) -> None:
    task = write_task(tmp_path, fake.base_url)

    result = invoke(
        "run", str(task), "--db", str(tmp_path / "db"), "--model", "nowhere/model"
    )

    assert result.exit_code == 2
    assert "unknown provider 'nowhere'" in result.stderr
    assert "[providers.nowhere]" in result.stderr


def test_missing_gguf_file(tmp_path: Path, fake: FakeServer) -> None:
    task = write_task(tmp_path, fake.base_url)

    result = invoke(
        "run", str(task), "--db", str(tmp_path / "db"), "--model", "local/missing.gguf"
    )

    assert result.exit_code == 2
    assert "local/missing.gguf: no GGUF file at" in result.stderr
