"""Ingest under hostile input: UTF-8 BOMs, numbers that must keep their text, the file's own
ids (source_id, duplicate ids), adversarial answer fields, and output dirs of same-named files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from sphere_core.config import DataConfig
from sphere_core.data.ingest import MAX_FIELD_CHARS, ingest_file
from sphere_core.grading import MAX_ANSWER_CHARS

BOM = "\ufeff"
ROWS = [
    {"id": "q1", "problem": "What is 2+3?", "answer": "5"},
    {"id": "q2", "problem": "What is 10/4?", "answer": "\\frac{5}{2}"},
]


# -- byte-order marks -------------------------------------------------------------------------
def test_jsonl_with_bom(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(BOM + "".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    res = ingest_file(path, DataConfig())
    assert res.stats["rejected"] == 0 and res.questions["source_row"].tolist() == [1, 2]
    assert res.questions["source_id"].tolist() == ["q1", "q2"]


def test_excel_csv_with_bom(tmp_path):
    path = tmp_path / "q.csv"
    body = 'id,problem,answer\r\nq1,"What is 2+3?",5\r\nq2,"What, is 1+1?",2\r\n'
    path.write_bytes((BOM + body).encode("utf-8"))
    res = ingest_file(path, DataConfig())
    assert res.stats["rejected"] == 0, res.rejects["reason"].tolist()
    assert res.questions["problem"].tolist() == ["What is 2+3?", "What, is 1+1?"]
    assert res.questions["source_id"].tolist() == ["q1", "q2"]


def test_json_array_with_bom(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(BOM + json.dumps(ROWS), encoding="utf-8")
    res = ingest_file(path, DataConfig())
    assert res.stats["accepted"] == 2 and res.stats["rejected"] == 0


def test_parquet_and_hf_are_untouched_by_bom_handling(tmp_path):
    rows = [{"problem": BOM + "What is 2+3?", "answer": "5"}]  # a BOM inside a value is data
    pd.DataFrame(rows).to_parquet(tmp_path / "q.parquet")
    res = ingest_file(tmp_path / "q.parquet", DataConfig())
    assert res.questions["problem"].tolist() == [BOM + "What is 2+3?"]
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    res = ingest_file(tmp_path / "hf", DataConfig())
    assert res.questions["problem"].tolist() == [BOM + "What is 2+3?"]


# -- numbers keep their text ------------------------------------------------------------------
NUMBER_TEXTS = ["1e23", "0.1", "3.0", "12345678901234567890", "-0.0"]


def _numbers_jsonl() -> str:
    lines = [f'{{"problem": "p{i}", "answer": {n}}}' for i, n in enumerate(NUMBER_TEXTS)]
    return "\n".join([*lines, '{"problem": "p5", "answer": "1,000"}']) + "\n"


def test_json_numbers_keep_their_text(tmp_path):
    (tmp_path / "n.jsonl").write_text(_numbers_jsonl())
    res = ingest_file(tmp_path / "n.jsonl", DataConfig())
    assert res.questions["answer"].tolist() == [*NUMBER_TEXTS, "1,000"]
    array = "[" + ",".join(_numbers_jsonl().splitlines()) + "]"
    (tmp_path / "n.json").write_text(array)
    res = ingest_file(tmp_path / "n.json", DataConfig())
    assert res.questions["answer"].tolist() == [*NUMBER_TEXTS, "1,000"]
    # a number where text is required is still rejected
    (tmp_path / "bad.jsonl").write_text(
        '{"problem": 7, "answer": 1}\n{"problem": 1.5, "answer": 1}\n'
    )
    reasons = ingest_file(tmp_path / "bad.jsonl", DataConfig()).rejects["reason"].tolist()
    assert reasons == ["problem is not a string (got int)", "problem is not a string (got float)"]


def test_csv_answers_are_strings(tmp_path):
    body = "problem,answer\n" + "".join(f"p{i},{n}\n" for i, n in enumerate(NUMBER_TEXTS))
    (tmp_path / "n.csv").write_text(body + 'p5,"1,000"\n')
    res = ingest_file(tmp_path / "n.csv", DataConfig())
    assert res.questions["answer"].tolist() == [*NUMBER_TEXTS, "1,000"]


def test_parquet_and_hf_numbers_without_float_drift(tmp_path):
    import datasets

    floats = pd.DataFrame({"problem": ["a", "b", "c", "d"], "answer": [1e23, 0.1, 3.0, -0.0]})
    big = pd.DataFrame(
        {"problem": ["e"], "answer": pd.Series([12345678901234567890], dtype="uint64")}
    )
    text = pd.DataFrame({"problem": ["f"], "answer": ["1,000"]})
    expected = [["1e+23", "0.1", "3", "-0.0"], ["12345678901234567890"], ["1,000"]]
    for k, (df, want) in enumerate(zip((floats, big, text), expected)):
        df.to_parquet(tmp_path / f"n{k}.parquet")
        assert (
            ingest_file(tmp_path / f"n{k}.parquet", DataConfig()).questions["answer"].tolist()
            == want
        )
        datasets.Dataset.from_pandas(df).save_to_disk(str(tmp_path / f"hf{k}"))
        assert ingest_file(tmp_path / f"hf{k}", DataConfig()).questions["answer"].tolist() == want


def test_grade_file_keeps_numbers_as_numbers(tmp_path, sphere_home, capsys):
    path = tmp_path / "preds.jsonl"
    path.write_text('{"id": 7, "prediction": "The final answer is 1e23.", "answer": 1e23}\n')
    assert main(["grade", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["correct"] == 1
    graded = json.loads((tmp_path / "preds.graded.jsonl").read_text())
    assert graded["id"] == 7 and graded["answer"] == 1e23 and graded["extracted"] == "1e23"


# -- the file's own ids -------------------------------------------------------------------------
def test_source_ids_kept_and_duplicates_rejected(tmp_path):
    rows = [
        {"id": "q1", "problem": "p1", "answer": "1"},
        {"id": 2, "problem": "p2", "answer": "2"},
        {"id": "q1", "problem": "p3", "answer": "3"},  # same id, other content
        {"problem": "p4", "answer": "4"},  # no id
        {"id": 2, "problem": "p2", "answer": "2"},  # same id, same content
        {"id": "", "problem": "p6", "answer": "6"},  # empty id: none
        {"id": {"x": 1}, "problem": "p7", "answer": "7"},
    ]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = ingest_file(path, DataConfig())
    assert res.questions["source_id"].tolist() == ["q1", "2", None, None]
    assert res.questions["source_row"].tolist() == [1, 2, 4, 6]
    assert dict(zip(res.rejects["row"], res.rejects["reason"])) == {
        3: "duplicate source id q1 (first at row 1)",
        5: "duplicate source id 2 (first at row 2)",
        7: "id field 'id' is not a string (got dict)",
    }
    assert res.stats["duplicate_source_ids"] == 2 and res.stats["duplicates"] == 0

    other = ingest_file(path, DataConfig(), id_field="")  # ids off: content dedup only
    assert other.questions["source_id"].isna().all() and other.stats["duplicates"] == 1
    renamed = tmp_path / "r.jsonl"
    renamed.write_text(
        "".join(
            json.dumps({"uid": f"u{i % 2}", "problem": f"p{i}", "answer": "1"}) + "\n"
            for i in range(3)
        )
    )
    res = ingest_file(renamed, DataConfig(), id_field="uid")
    assert res.questions["source_id"].tolist() == ["u0", "u1"]
    assert res.rejects["reason"].tolist() == ["duplicate source id u0 (first at row 1)"]


def test_packaged_benchmark_ids_become_source_ids(shipped_data):
    res = ingest_file(shipped_data / "math500.jsonl", DataConfig(limit=2))
    assert res.stats["rejected"] == 0
    assert res.questions["source_id"].tolist() == [
        "test/precalculus/807.json",
        "test/intermediate_algebra/1994.json",
    ]


# -- adversarial answer fields --------------------------------------------------------------------
def test_adversarial_answer_fields_are_rejected_fast(tmp_path):
    rows = [
        {"problem": "nested", "solution": "\\boxed{" * 12_000},
        {"problem": "unclosed", "answer": "\\boxed{1 " * 10_000},
        {"problem": "many markers", "answer": "#### " * 20_000},
        {"problem": "huge", "solution": "\\boxed{1}" + "x" * MAX_FIELD_CHARS},
        {"problem": "long answer", "answer": "1" * (MAX_ANSWER_CHARS + 1)},
        {"problem": "deep but fine", "solution": "\\boxed{" * 6_000 + "7" + "}" * 6_000},
        {"problem": "digits", "answer": "9" * 90_000 + " #### 12"},
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    start = time.perf_counter()
    res = ingest_file(path, DataConfig())
    assert time.perf_counter() - start < 5.0  # 7 rows of 84 KB+; the old extractor needed minutes
    reasons = dict(zip(res.rejects["row"], res.rejects["reason"]))
    assert reasons[1] == "unbalanced or empty \\boxed{} in field 'solution'"
    assert reasons[2] == "unbalanced or empty \\boxed{} in field 'answer'"
    assert reasons[3] == "empty answer after '####' in field 'answer'"
    assert reasons[4] == (
        f"field 'solution' too long to parse ({MAX_FIELD_CHARS + 9} characters > {MAX_FIELD_CHARS})"
    )
    assert reasons[5] == (
        f"answer from field 'answer' too long ({MAX_ANSWER_CHARS + 1} characters > "
        f"{MAX_ANSWER_CHARS})"
    )
    assert res.questions["answer"].tolist() == ["7", "12"]


# -- output dirs -------------------------------------------------------------------------------
def test_cli_same_name_files_do_not_share_outputs(tmp_path, sphere_home, capsys):
    a, b = tmp_path / "a" / "q.jsonl", tmp_path / "b" / "q.jsonl"
    for path, rows in ((a, ROWS[:1]), (b, ROWS)):
        path.parent.mkdir()
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def ingest(path: Path) -> dict:
        assert main(["ingest", str(path), "--format", "json"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    first, second, again = ingest(a), ingest(b), ingest(a)
    assert Path(first["out_dir"]) == sphere_home / "ingest" / "q"
    assert Path(second["out_dir"]).parent == sphere_home / "ingest"
    assert Path(second["out_dir"]).name.startswith("q-") and second["out_dir"] != first["out_dir"]
    assert again["out_dir"] == first["out_dir"]  # the same input keeps its dir
    assert first["source"] == str(a.resolve()) and second["source"] == str(b.resolve())
    assert len(pd.read_parquet(first["questions_file"])) == 1
    assert len(pd.read_parquet(second["questions_file"])) == 2
    assert main(["ingest", str(b)]) == 0
    assert "out_dir" in capsys.readouterr().out


@pytest.mark.parametrize("legacy", [True, False])
def test_cli_output_dir_without_owner(tmp_path, sphere_home, capsys, legacy):
    """A dir written before ingest recorded owners is never overwritten; an empty one is taken."""
    out = sphere_home / "ingest" / "q"
    out.mkdir(parents=True)
    if legacy:
        (out / "questions.parquet").write_bytes(b"someone else's")
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n")
    assert main(["ingest", str(path), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (Path(summary["out_dir"]) == out) is not legacy
    if legacy:
        assert (out / "questions.parquet").read_bytes() == b"someone else's"
