"""A full disk is an infrastructure error, not a bug: ENOSPC / EDQUOT / EROFS from any write end
as one line naming the path, the free space left there and the command that continues, exit 3;
nothing half-written is left under a final name; phases that write a lot check free space first.

Faults are injected by making a real write raise the OSError a full disk raises.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from flows.commands import config_cmds
from flows.commands.cli_support import announce_run
from sphere_core import disk
from sphere_core.errors import DiskFullError, TrainingError
from sphere_core.logs import SessionFileHandler
from tests.unit.test_cli_errors import logged_at, one_line, run_cli
from tests.unit.test_ingest import ROWS, write_jsonl


def _full(path: Path, code: int = errno.ENOSPC) -> OSError:
    return OSError(code, os.strerror(code), str(path))


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.EROFS, "read-only file system"),
    ],
)
def test_a_disk_error_is_exit_3_with_path_free_space_and_the_command(
    sphere_home, capsys, monkeypatch, code, words
):
    target = sphere_home / "artifacts" / "x" / "part-00000.parquet"

    def broken(*args, **kwargs):
        raise _full(target, code)

    monkeypatch.setattr(config_cmds, "resolve_config", broken)
    rc, out, err = run_cli(capsys, "config", "show")
    assert rc == 3 and out == ""
    line = one_line(err)
    assert line.startswith(f"error: {words} writing {target}")
    if code != errno.EROFS:
        assert " free there)" in line
    assert "free some space, then run `sphere config show` again (log: " in line
    assert "OSError" in logged_at(line, "log:").read_text()


def test_a_disk_error_behind_a_wrapper_or_in_a_group_is_still_exit_3(
    sphere_home, capsys, monkeypatch
):
    target = sphere_home / "runs" / "r1" / "model" / "checkpoints"

    def wrapped(*args, **kwargs):
        announce_run("r1")
        try:
            raise _full(target)
        except OSError as err:
            raise ExceptionGroup("tasks", [TrainingError("save failed")]) from err

    monkeypatch.setattr(config_cmds, "resolve_config", wrapped)
    rc, _, err = run_cli(capsys, "config", "show")
    line = one_line(err)
    assert rc == 3 and line.startswith(f"error: no space left on device writing {target}")
    assert "continue run r1 with `sphere resume r1`" in line


def test_ingest_on_a_full_disk_leaves_no_half_written_file_and_reruns_cleanly(
    tmp_path, sphere_home, capsys, monkeypatch
):
    source = write_jsonl(tmp_path / "mine.jsonl", ROWS)
    out_dir = tmp_path / "out"
    real = pd.DataFrame.to_parquet

    def half_then_full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 half")  # what a full disk leaves behind
        raise _full(Path(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_full)
    rc, _, err = run_cli(capsys, "ingest", str(source), "--out", str(out_dir))
    line = one_line(err)
    assert rc == 3 and line.startswith("error: no space left on device writing ")
    assert f"then run `sphere ingest {source} --out {out_dir}` again" in line
    assert not (out_dir / "questions.parquet").exists()  # only the temporary name was written

    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    assert main(["ingest", str(source), "--out", str(out_dir)]) == 0
    assert len(pd.read_parquet(out_dir / "questions.parquet")) == len(ROWS)


def test_free_space_is_checked_before_a_big_write(tmp_path, monkeypatch):
    monkeypatch.setattr(disk, "free_bytes", lambda path: 300 * 1024**2)
    with pytest.raises(DiskFullError) as caught:
        disk.require_free(tmp_path / "model" / "checkpoints", 2 * disk.GIB, "DPO checkpoints")
    message = str(caught.value)
    assert message == (
        f"DPO checkpoints need about 2.0 GiB under {tmp_path / 'model' / 'checkpoints'}, "
        "but only 300 MiB is free there; free some space"
    )
    assert caught.value.exit_code == 3
    disk.require_free(tmp_path, 100 * 1024**2, "small")  # enough: no error


def test_free_bytes_looks_at_the_nearest_existing_parent(tmp_path):
    assert disk.free_bytes(tmp_path / "not" / "yet" / "made") == disk.free_bytes(tmp_path) > 0


def test_the_log_file_drops_records_on_a_full_disk_without_noise(tmp_path, capsys):
    handler = SessionFileHandler(tmp_path / "x.log")

    class Full:
        def write(self, text):
            raise _full(tmp_path / "x.log")

        def flush(self):
            pass

    handler.stream = Full()
    handler.emit(logging.LogRecord("x", logging.ERROR, __file__, 1, "message", None, None))
    assert capsys.readouterr().err == ""


def test_a_full_disk_is_not_retried_by_the_tasks(tmp_path):
    from tasks.task_options import is_transient

    assert not is_transient(_full(tmp_path / "x"))
    assert not is_transient(_full(tmp_path / "x", errno.EROFS))
    assert is_transient(OSError(errno.EIO, "I/O error", str(tmp_path / "x")))


def test_free_space_is_checked_before_the_embedded_model_is_converted(tmp_path, monkeypatch):
    """Converting a GGUF writes its tensors dequantized to float32: the size is read from the
    GGUF header and checked before anything is written under the home's models/ dir."""
    from sphere_core.backends import embedded

    gguf = embedded.part_paths("embedded-small")[0]  # one file, no assembly
    need = embedded.converted_bytes(gguf)
    assert 4 * 130_000_000 < need < 4 * 140_000_000 * 1.1 + 64 * 1024**2  # 134.5M parameters
    monkeypatch.setattr(disk, "free_bytes", lambda path: 200 * 1024**2)
    with pytest.raises(DiskFullError) as caught:
        embedded.resolve_model_path("embedded-small", tmp_path)
    assert str(caught.value).startswith(
        f"the converted weights of {gguf.name} need about {disk.human(need)} under "
        f"{tmp_path / 'models'}, but only 200 MiB is free there"
    )
    written = [p.name for p in (tmp_path / "models").iterdir() if p.suffix != ".lock"]
    assert written == []  # nothing but the converters' lock file: no temporary dir
