"""Read a question file into ``(row_number, record | error)`` pairs, one per input row.

Owns file formats only (JSONL, JSON array, Parquet, CSV/TSV, a saved HF ``datasets`` dir).
A row that cannot be parsed (a malformed JSON line, a CSV row with the wrong number of
fields) comes back as an error string with its row number, so ingest can reject it and go on;
a file that cannot be read at all raises ``InputDataError`` naming the file.
Row numbers are 1-based: the line number for JSONL, the data row (header excluded) otherwise.

Text files may start with a UTF-8 byte-order mark (Excel writes one); it is not data. JSON
numbers come back as ``JsonNumber`` strings holding the number as written (``1e23`` stays
``"1e23"``, not ``99999999999999991611392``); CSV fields are always strings. Parquet and HF
values keep their Arrow types (formatting them is the caller's).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sphere_core.errors import InputDataError

Row = tuple[int, dict[str, Any] | None, str | None, str]  # (row, record, error, raw)

RAW_LIMIT = 2000
BOM = "\ufeff"
_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
}


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "hf"
    detected = _SUFFIX_FORMATS.get(path.suffix.lower())
    if detected is None:
        raise InputDataError(
            f"cannot tell the format of {path} from its suffix; set data.format "
            f"(jsonl | json | parquet | csv | hf)"
        )
    return detected


class JsonNumber(str):
    """A JSON number as the text it was written with; ``value()`` gives the Python number."""

    kind = "number"

    def value(self) -> int | float:
        raise NotImplementedError


class JsonInt(JsonNumber):
    kind = "int"

    def value(self) -> int:
        return int(self)


class JsonFloat(JsonNumber):
    kind = "float"

    def value(self) -> float:
        return float(self)


def loads(text: str) -> Any:
    """``json.loads`` keeping every number's source text (``JsonInt`` / ``JsonFloat``)."""
    return json.loads(text, parse_int=JsonInt, parse_float=JsonFloat)


def plain(obj: Any) -> Any:
    """``obj`` with every ``JsonNumber`` turned back into the number it stands for (for output)."""
    if isinstance(obj, JsonNumber):
        return obj.value()
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj


def _raw(obj: Any) -> str:
    if isinstance(obj, str) and not isinstance(obj, JsonNumber):
        return obj[:RAW_LIMIT]
    return json.dumps(plain(obj), ensure_ascii=False, default=str)[:RAW_LIMIT]


def _records(values: list[Any]) -> Iterator[Row]:
    for i, value in enumerate(values, start=1):
        if isinstance(value, dict):
            yield i, value, None, _raw(value)
        else:
            yield i, None, f"row is not an object (got {type(value).__name__})", _raw(value)


def _read_jsonl(path: Path) -> Iterator[Row]:
    try:
        handle = path.open("rb")
    except OSError as err:
        raise InputDataError(f"cannot read question file {path}: {err.strerror or err}") from None
    with handle:
        for lineno, line_bytes in enumerate(handle, start=1):
            try:
                line = line_bytes.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield (
                    lineno,
                    None,
                    f"line is not valid UTF-8 ({err.reason})",
                    repr(line_bytes[:RAW_LIMIT]),
                )
                continue
            if not line.strip():
                continue
            try:
                value = loads(line)
            except json.JSONDecodeError as err:
                yield (
                    lineno,
                    None,
                    f"malformed JSON: {err.msg} (column {err.colno})",
                    _raw(line.rstrip("\n")),
                )
                continue
            if isinstance(value, dict):
                yield lineno, value, None, _raw(line.rstrip("\n"))
            else:
                yield (
                    lineno,
                    None,
                    f"row is not a JSON object (got {type(value).__name__})",
                    _raw(line.rstrip("\n")),
                )


def _read_json(path: Path) -> Iterator[Row]:
    try:
        value = loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as err:
        raise InputDataError(f"cannot read question file {path}: {err}") from None
    except json.JSONDecodeError:
        # A .json file holding one object per line is common; read it as JSONL.
        yield from _read_jsonl(path)
        return
    if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), list):
        value = next(iter(value.values()))  # {"data": [...]} wrapper
    if not isinstance(value, list):
        raise InputDataError(f"{path}: expected a JSON array of objects (or JSON lines)")
    yield from _records(value)


def _read_csv(path: Path) -> Iterator[Row]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
        with handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            for i, fields in enumerate(reader, start=1):
                raw = _raw(delimiter.join(fields))
                if not any(f.strip() for f in fields):
                    continue
                if len(fields) != len(header):
                    yield (
                        i,
                        None,
                        f"malformed CSV row: expected {len(header)} fields, got {len(fields)}",
                        raw,
                    )
                    continue
                yield i, dict(zip(header, fields)), None, raw
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputDataError(f"cannot read question file {path}: {err}") from None


def _read_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 - any failure means the file is unreadable
        raise InputDataError(f"cannot read Parquet file {path}: {err}") from None
    yield from _records(table.to_pylist())


def _read_hf(path: Path) -> Iterator[Row]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - any failure means the dir is unreadable
        raise InputDataError(f"cannot load a saved datasets dir from {path}: {err}") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded.keys())
        if len(splits) == 1:
            loaded = loaded[splits[0]]
        elif "train" in loaded:
            loaded = loaded["train"]
        else:
            raise InputDataError(
                f"{path} holds splits {splits}; save a single split or a 'train' split"
            )
    yield from _records(loaded.to_list())


_READERS = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "csv": _read_csv,
    "parquet": _read_parquet,
    "hf": _read_hf,
}


def read_rows(path: Path, fmt: str = "auto") -> list[Row]:
    """All rows of ``path``; raises ``InputDataError`` if the file cannot be read at all."""
    if not path.exists():
        raise InputDataError(f"question file not found: {path}")
    fmt = detect_format(path, fmt)
    if path.is_dir() and fmt != "hf":
        raise InputDataError(
            f"{path} is a directory; only a saved HF datasets dir (format hf) can be one"
        )
    if fmt not in _READERS:
        raise InputDataError(f"unsupported data.format {fmt!r} for {path}")
    return list(_READERS[fmt](path))
