"""Ingest: formats, per-row validation and rejects, ids, dedup, limit, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from sphere_core.config import DataConfig
from sphere_core.data.ingest import (
    BUILTIN_DIR,
    ingest_file,
    question_id,
    resolve_data_path,
    write_ingest,
)
from sphere_core.errors import InputDataError
from sphere_core.schemas import QUESTION_COLUMNS, REJECT_COLUMNS

ROWS = [
    {"problem": "What is 2+3?", "answer": "5"},
    {"problem": "What is 10/4?", "answer": "\\frac{5}{2}"},
    {"question": "How many legs do 3 cats have?", "answer": "12"},
]


def write_jsonl(path: Path, rows: list, extra_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_accepts_good_rows_with_schema(tmp_path):
    res = ingest_file(write_jsonl(tmp_path / "q.jsonl", ROWS), DataConfig())
    assert list(res.questions.columns) == QUESTION_COLUMNS
    assert list(res.rejects.columns) == REJECT_COLUMNS
    assert (
        res.stats["accepted"] == 3 and res.stats["rejected"] == 0 and res.stats["total_rows"] == 3
    )
    assert res.questions["problem"].tolist()[2] == "How many legs do 3 cats have?"
    assert res.questions["answer"].tolist() == ["5", "\\frac{5}{2}", "12"]
    assert res.questions["source_row"].tolist() == [1, 2, 3]
    assert res.questions["question_id"].str.fullmatch(r"[0-9a-f]{16}").all()


def test_question_id_is_content_hash_of_normalised_text():
    assert question_id("What is  2+3?\n", "5") == question_id(" What is 2+3?", " 5 ")
    assert question_id("What is 2+3?", "5") != question_id("What is 2+3?", "6")
    assert question_id("a b", "c") != question_id("a", "b c")


def test_malformed_line_missing_answer_empty_problem_are_rejected_with_row_numbers(tmp_path):
    path = write_jsonl(
        tmp_path / "q.jsonl",
        ROWS[:1],
        extra_lines=(
            '{"problem": "broken", "answer": ',  # line 2: malformed JSON
            json.dumps({"problem": "no answer here"}),  # line 3
            json.dumps({"problem": "   ", "answer": "1"}),  # line 4
            json.dumps({"problem": 7, "answer": "1"}),  # line 5
            "[1, 2]",  # line 6
            json.dumps({"problem": "empty answer", "answer": ""}),  # line 7
            json.dumps(ROWS[1]),  # line 8: good
        ),
    )
    res = ingest_file(path, DataConfig())
    assert res.stats == {**res.stats, "accepted": 2, "rejected": 6, "total_rows": 8}
    reasons = dict(zip(res.rejects["row"], res.rejects["reason"]))
    assert reasons[2].startswith("malformed JSON")
    assert "missing answer" in reasons[3]
    assert reasons[4] == "empty problem"
    assert "not a string" in reasons[5]
    assert "not a JSON object" in reasons[6]
    assert reasons[7] == "empty answer"
    assert res.rejects["source"].iloc[0] == str(path.resolve())
    assert '"broken"' in res.rejects.set_index("row").loc[2, "raw"]
    assert res.questions["source_row"].tolist() == [1, 8]


def test_duplicates_dropped_and_counted(tmp_path):
    dup = {"problem": "What   is 2+3?", "answer": " 5"}  # same after whitespace normalisation
    res = ingest_file(write_jsonl(tmp_path / "q.jsonl", [*ROWS, dup, ROWS[0]]), DataConfig())
    assert (
        res.stats["accepted"] == 3 and res.stats["duplicates"] == 2 and res.stats["rejected"] == 0
    )
    assert res.questions["question_id"].is_unique


def test_gsm8k_style_solution_in_answer_field(tmp_path):
    rows = [
        {
            "question": "Tom has 1,000 apples and buys 1,125 more.",
            "answer": "1000+1125=<<1000+1125=2125>>2125\n#### 2,125",
        },
        {"question": "Bad one", "answer": "no final\n####   "},
    ]
    res = ingest_file(write_jsonl(tmp_path / "gsm.jsonl", rows), DataConfig())
    assert res.questions["answer"].tolist() == ["2125"]
    assert "####" in res.rejects["reason"].iloc[0]


def test_boxed_style_solution_field(tmp_path):
    rows = [
        {
            "problem": "p1",
            "solution": "So $x = \\boxed{\\frac{1}{2}}$, not \\boxed{3}? No: \\fbox{\\{1, 2\\}}.",
        },
        {"problem": "p2", "solution": "We get \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}."},
        {"problem": "p3", "solution": "A worked solution with no boxed answer."},
        {"problem": "p4", "solution": "Unbalanced \\boxed{\\frac{1}{2}"},
    ]
    res = ingest_file(write_jsonl(tmp_path / "math.jsonl", rows), DataConfig())
    assert res.questions["answer"].tolist() == ["\\{1, 2\\}", "\\left( 3, \\frac{\\pi}{2} \\right)"]
    assert res.rejects["row"].tolist() == [3, 4]
    boxed_only = ingest_file(
        write_jsonl(
            tmp_path / "m2.jsonl", [{"problem": "p", "answer": "12", "solution": "\\boxed{7}"}]
        ),
        DataConfig(answer_field="solution", answer_style="boxed"),
    )
    assert boxed_only.questions["answer"].tolist() == ["7"]


def test_configured_field_names(tmp_path):
    rows = [{"q": "What is 1+1?", "final": "2"}, {"q": "What is 2+2?"}]
    res = ingest_file(
        write_jsonl(tmp_path / "q.jsonl", rows), DataConfig(problem_field="q", answer_field="final")
    )
    assert res.questions["answer"].tolist() == ["2"]
    assert "'final'" in res.rejects["reason"].iloc[0]
    missing = ingest_file(write_jsonl(tmp_path / "r.jsonl", rows), DataConfig())
    assert missing.stats["accepted"] == 0 and "missing problem" in missing.rejects["reason"].iloc[0]


def test_parquet_csv_and_hf_dir(tmp_path):
    df = pd.DataFrame(ROWS[:2] + [{"problem": "", "answer": "1"}])
    df.to_parquet(tmp_path / "q.parquet")
    res = ingest_file(tmp_path / "q.parquet", DataConfig())
    assert res.stats["accepted"] == 2 and res.rejects["row"].tolist() == [3]

    (tmp_path / "q.csv").write_text(
        'problem,answer\n"What is 2+3?",5\n"What, is 1+1?",2\nonly one field\n,7\n'
    )
    res = ingest_file(tmp_path / "q.csv", DataConfig())
    assert res.questions["problem"].tolist() == ["What is 2+3?", "What, is 1+1?"]
    assert dict(zip(res.rejects["row"], res.rejects["reason"])) == {
        3: "malformed CSV row: expected 2 fields, got 1",
        4: "empty problem",
    }

    import datasets

    ds = datasets.Dataset.from_list(
        [{"question": "q1", "answer": "a #### 4"}, {"question": "q2", "answer": "b #### 5"}]
    )
    ds.save_to_disk(str(tmp_path / "hf"))
    res = ingest_file(tmp_path / "hf", DataConfig())
    assert res.questions["answer"].tolist() == ["4", "5"]
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "hfd"))
    assert ingest_file(tmp_path / "hfd", DataConfig()).stats["accepted"] == 2


def test_too_long_problem_with_counter(tmp_path):
    rows = [{"problem": "short one", "answer": "1"}, {"problem": "word " * 50, "answer": "2"}]
    count = lambda text: len(text.split())
    res = ingest_file(
        write_jsonl(tmp_path / "q.jsonl", rows),
        DataConfig(),
        max_prompt_tokens=10,
        count_tokens=count,
    )
    assert res.stats["accepted"] == 1
    assert res.rejects["reason"].iloc[0] == "problem too long: 50 tokens > 10 allowed"
    assert (
        ingest_file(tmp_path / "q.jsonl", DataConfig()).stats["accepted"] == 2
    )  # no counter, no check


def test_limit_and_shuffle_apply_after_dedup(tmp_path):
    rows = [{"problem": f"p{i}", "answer": str(i)} for i in range(10)]
    path = write_jsonl(tmp_path / "q.jsonl", [rows[0], rows[0], *rows[1:]])
    res = ingest_file(path, DataConfig(limit=3))
    assert res.questions["problem"].tolist() == ["p0", "p1", "p2"] and res.stats["duplicates"] == 1
    a = ingest_file(path, DataConfig(limit=4, shuffle=True, seed=1)).questions["problem"].tolist()
    b = ingest_file(path, DataConfig(limit=4, shuffle=True, seed=1)).questions["problem"].tolist()
    c = ingest_file(path, DataConfig(shuffle=True, seed=2)).questions["problem"].tolist()
    assert a == b and len(a) == 4 and len(set(a)) == 4
    assert sorted(c) == sorted(f"p{i}" for i in range(10)) and c != sorted(
        c, key=lambda p: int(p[1:])
    )


def test_unreadable_files_raise_naming_the_file(tmp_path):
    with pytest.raises(InputDataError, match="nope.jsonl"):
        ingest_file(tmp_path / "nope.jsonl", DataConfig())
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputDataError, match="bad.parquet"):
        ingest_file(tmp_path / "bad.parquet", DataConfig())
    (tmp_path / "q.txt").write_text("x")
    with pytest.raises(InputDataError, match="q.txt"):
        ingest_file(tmp_path / "q.txt", DataConfig())
    with pytest.raises(InputDataError, match="unknown builtin"):
        resolve_data_path("builtin:nope")


def test_builtin_data_is_packaged(shipped_data):
    demo = resolve_data_path("builtin:gsm8k_demo")
    assert demo.parent == BUILTIN_DIR
    train_rows = set((shipped_data / "gsm8k_train.jsonl").read_text().splitlines())
    demo_rows = demo.read_text().splitlines()
    assert len(demo_rows) == 12 and set(demo_rows) <= train_rows  # verbatim GSM8K-train rows
    res = ingest_file("builtin:gsm8k_demo", DataConfig())
    assert res.stats["accepted"] == 12 and res.questions["source"].eq("builtin:gsm8k_demo").all()


@pytest.mark.needs_shared
def test_builtin_data_matches_the_originals(shared_data):
    for name in ("gsm8k_train", "math_train"):
        assert (
            resolve_data_path(f"builtin:{name}").stat().st_size
            == (shared_data / f"{name}.jsonl").stat().st_size
        )


def test_math_train_boxed_extractor_reproduces_answers(shipped_data):
    """The brace-matched last-\\boxed extractor gives every MATH-train gold answer from its
    solution."""
    res = ingest_file(
        shipped_data / "math_train.jsonl", DataConfig(answer_field="solution", answer_style="boxed")
    )
    gold = pd.read_json(shipped_data / "math_train.jsonl", lines=True)
    assert res.stats["rejected"] == 0
    gold.index = gold.index + 1  # source_row is the 1-based line number
    merged = res.questions.join(
        gold[["answer"]].rename(columns={"answer": "gold"}), on="source_row"
    )
    assert (merged["answer"] == merged["gold"]).all()


def test_write_ingest_outputs(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", ROWS, extra_lines=("{oops",))
    res = ingest_file(path, DataConfig())
    paths = write_ingest(res, tmp_path / "out")
    assert pd.read_parquet(paths["questions_file"]).equals(res.questions)
    assert pd.read_parquet(paths["rejects_file"])["row"].tolist() == [4]
    assert json.loads(paths["rejects_jsonl"].read_text().splitlines()[0])["row"] == 4


def test_cli_ingest_json(tmp_path, sphere_home, capsys):
    path = write_jsonl(tmp_path / "mine.jsonl", [*ROWS, ROWS[0]], extra_lines=("not json",))
    assert main(["ingest", str(path), "--format", "json", "--set", "data.limit=2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["accepted"] == 2 and summary["rejected"] == 1
    assert summary["duplicates"] == 1 and summary["total_rows"] == 5
    assert Path(summary["questions_file"]) == sphere_home / "ingest" / "mine" / "questions.parquet"
    assert len(pd.read_parquet(summary["questions_file"])) == 2
    assert pd.read_parquet(summary["rejects_file"])["row"].tolist() == [5]

    out = tmp_path / "custom"
    assert main(["ingest", str(path), "--out", str(out)]) == 0
    assert "accepted" in capsys.readouterr().out and (out / "rejects.jsonl").is_file()


def test_cli_ingest_failures(tmp_path, sphere_home, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"problem": "x"}])
    assert main(["ingest", str(bad), "--format", "json"]) != 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["accepted"] == 0
    assert "no row accepted" in captured.err and captured.err.count("\n") == 1
    assert main(["ingest", str(tmp_path / "missing.jsonl")]) != 0
    assert "missing.jsonl" in capsys.readouterr().err


def test_cli_ingest_builtin_default_from_preset(sphere_home, capsys):
    assert main(["ingest", "--preset", "demo", "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["accepted"] == 8
    assert Path(summary["questions_file"]).parent == sphere_home / "ingest" / "gsm8k_demo"
