"""`--out` of `sphere ingest` / `sphere grade` that is a file or cannot be written: one line on
stderr naming the option, exit 3, nothing written."""

from __future__ import annotations

import json

import pytest

from flows.cli import main


@pytest.fixture
def question_file(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    return path


def test_ingest_out_is_a_file(sphere_home, tmp_path, question_file, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    assert main(["ingest", str(question_file), "--out", str(blocker / "sub")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and str(blocker) in err[0]
    assert blocker.read_text() == "x"


def test_grade_out_folder_is_a_file(sphere_home, tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"prediction": "Final Answer: $2$", "answer": "2"}) + "\n")
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    assert main(["grade", str(preds), "--out", str(blocker / "graded.jsonl")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0]
