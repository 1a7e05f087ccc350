"""Ingest: turn a question file into validated, de-duplicated questions plus a rejects table.

Owns field mapping (``DataConfig``), per-row validation, question ids, the file's own ids
(``source_id``), dedup, limit/shuffle and writing ``questions.parquet`` / ``rejects.parquet``
(+ ``rejects.jsonl``) to a directory no other input file writes to. Bad rows are rejected with
their row number and reason and never stop the file; a file that cannot be read at all raises
``InputDataError``. File formats live in ``readers``.

Answers keep the text they were written with: a JSON number ``1e23`` is the answer ``"1e23"``;
Parquet/HF floats are formatted without float drift (``repr``; integral ones below 2**53 as
integers). Answer parsing (``####``, ``\\boxed{}``) is linear-time, and a field longer than
``MAX_FIELD_CHARS`` is rejected unparsed, so no row can stall a file.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from sphere_core.config import DataConfig
from sphere_core.data.readers import JsonNumber, read_rows
from sphere_core.errors import InputDataError
from sphere_core.grading.extract import MAX_ANSWER_CHARS, gsm8k_answer, last_boxed
from sphere_core.schemas import QUESTION_COLUMNS, REJECT_COLUMNS

BUILTIN_PREFIX = "builtin:"
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
PROBLEM_FIELDS = ("problem", "question")
ANSWER_FIELDS = ("answer",)
SOLUTION_FIELDS = ("solution",)
DEFAULT_ID_FIELD = "id"
MAX_FIELD_CHARS = 200_000
"""Longest answer/solution field that is parsed; the longest packaged solution is 13,820."""
SOURCE_FILE = "SOURCE"  # in an ingest output dir: the input it belongs to


@dataclass
class IngestResult:
    questions: pd.DataFrame  # QUESTION_COLUMNS
    rejects: pd.DataFrame  # REJECT_COLUMNS
    stats: dict[str, Any] = field(
        default_factory=dict
    )  # accepted, rejected, duplicates, duplicate_source_ids, total_rows, valid_unique, source


class _Reject(Exception):
    """A row-level validation failure (becomes a rejects row)."""


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.jsonl"))


def resolve_data_path(path: str | Path) -> Path:
    """``builtin:NAME`` -> the packaged ``sphere_core/data/builtin/NAME.jsonl``; else the path."""
    text = str(path)
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX) :].removesuffix(".jsonl")
        candidate = BUILTIN_DIR / f"{name}.jsonl"
        if not candidate.is_file():
            raise InputDataError(
                f"unknown builtin data set {text!r}; available: "
                + ", ".join(f"builtin:{n}" for n in builtin_names())
            )
        return candidate
    return Path(text).expanduser()


def _norm(text: str) -> str:
    return " ".join(text.split())


def question_id(problem: str, answer: str) -> str:
    """First 16 hex chars of sha256 over whitespace-collapsed problem and answer."""
    blob = _norm(problem) + "\x1f" + _norm(answer)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def format_float(value: float) -> str:
    """A float as text without drift: integral values below 2**53 as integers, else ``repr``
    (``1e+23``, ``0.1``, ``-0.0``)."""
    negative_zero = value == 0 and math.copysign(1.0, value) < 0
    if value.is_integer() and abs(value) < 2**53 and not negative_zero:
        return str(int(value))
    return repr(value)


def _scalar_text(value: Any, what: str) -> str | None:
    """Text of a scalar field value as written (``None`` when empty); rejects other types."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, JsonNumber):
        text = str(value)
    elif isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise _Reject(f"{what} is not a string (got {type(value).__name__})")
    elif isinstance(value, float):
        text = format_float(value)
    else:
        text = str(value)
    return text.strip() or None


def _as_text(value: Any, what: str) -> str:
    text = _scalar_text(value, what)
    if text is None:
        raise _Reject(f"empty {what}")
    return text


def _pick(record: dict[str, Any], configured: str | None, defaults: tuple[str, ...]) -> str | None:
    if configured is not None:
        return configured if configured in record else None
    return next((name for name in defaults if name in record), None)


def _answer_from(text: str, style: str, where: str) -> str:
    if len(text) > MAX_FIELD_CHARS:
        raise _Reject(
            f"field '{where}' too long to parse ({len(text)} characters > {MAX_FIELD_CHARS})"
        )
    answer = _parse_answer(text, style, where)
    if len(answer) > MAX_ANSWER_CHARS:
        raise _Reject(
            f"answer from field '{where}' too long ({len(answer)} characters > {MAX_ANSWER_CHARS})"
        )
    return answer


def _parse_answer(text: str, style: str, where: str) -> str:
    if style == "plain":
        return text
    if style in ("auto", "gsm8k") and "####" in text:
        found = gsm8k_answer(text)
        if found:
            return found
        raise _Reject(f"empty answer after '####' in field '{where}'")
    if style in ("auto", "boxed") and ("\\boxed" in text or "\\fbox" in text):
        found = last_boxed(text)
        if found:
            return found
        raise _Reject(f"unbalanced or empty \\boxed{{}} in field '{where}'")
    if style == "auto":
        return text
    raise _Reject(
        f"no {'####' if style == 'gsm8k' else chr(92) + 'boxed{}'} answer in field '{where}'"
    )


def _extract_answer(record: dict[str, Any], cfg: DataConfig) -> str:
    answer_field = _pick(record, cfg.answer_field, ANSWER_FIELDS)
    if answer_field is not None and record.get(answer_field) not in (None, ""):
        return _answer_from(
            _as_text(record[answer_field], "answer"), cfg.answer_style, answer_field
        )
    solution_field = _pick(record, cfg.solution_field, SOLUTION_FIELDS)
    if solution_field is not None and record.get(solution_field) not in (None, ""):
        solution = _as_text(record[solution_field], "solution")
        style = cfg.answer_style
        if style in ("auto", "plain"):  # a bare worked solution is not an answer
            if not any(marker in solution for marker in ("####", "\\boxed", "\\fbox")):
                raise _Reject(f"no '####' or \\boxed{{}} answer in field '{solution_field}'")
            style = "auto"
        return _answer_from(solution, style, solution_field)
    looked = [f for f in (cfg.answer_field, cfg.solution_field) if f] or [
        *ANSWER_FIELDS,
        *SOLUTION_FIELDS,
    ]
    if answer_field is not None or solution_field is not None:
        raise _Reject("empty answer")
    raise _Reject(f"missing answer (looked for field {' / '.join(repr(f) for f in looked)})")


def _validate(
    record: dict[str, Any],
    cfg: DataConfig,
    max_prompt_tokens: int | None,
    count_tokens: Callable[[str], int] | None,
) -> tuple[str, str]:
    problem_field = _pick(record, cfg.problem_field, PROBLEM_FIELDS)
    if problem_field is None:
        looked = [cfg.problem_field] if cfg.problem_field else list(PROBLEM_FIELDS)
        raise _Reject(f"missing problem (looked for field {' / '.join(repr(f) for f in looked)})")
    value = record[problem_field]
    if isinstance(value, JsonNumber):
        raise _Reject(f"problem is not a string (got {value.kind})")
    if value is not None and not isinstance(value, str):
        raise _Reject(f"problem is not a string (got {type(value).__name__})")
    if value is None or not value.strip():
        raise _Reject("empty problem")
    problem = value.strip()
    answer = _extract_answer(record, cfg)
    if count_tokens is not None and max_prompt_tokens is not None:
        n_tokens = count_tokens(problem)
        if n_tokens > max_prompt_tokens:
            raise _Reject(f"problem too long: {n_tokens} tokens > {max_prompt_tokens} allowed")
    return problem, answer


def _source_id(record: dict[str, Any], id_field: str | None) -> str | None:
    if not id_field or id_field not in record:
        return None
    return _scalar_text(record[id_field], f"id field '{id_field}'")


def source_name(path: str | Path) -> str:
    """How ingest names an input: ``builtin:NAME`` as given, else the resolved absolute path."""
    text = str(path)
    return text if text.startswith(BUILTIN_PREFIX) else str(resolve_data_path(path).resolve())


def ingest_file(
    path: str | Path,
    data_cfg: DataConfig,
    *,
    max_prompt_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    id_field: str | None = None,
) -> IngestResult:
    """Validate every row of ``path``; reject bad rows, drop duplicates, apply shuffle/limit.

    ``id_field`` (default: ``data.id_field`` when the config has it, else ``"id"``; ``""``
    turns it off) names the file's own id column: its value is kept as ``source_id``, and a row
    repeating an earlier row's id is rejected as ``duplicate source id <x> (first at row N)``.
    """
    if id_field is None:
        id_field = getattr(data_cfg, "id_field", DEFAULT_ID_FIELD)
    resolved = resolve_data_path(path)
    source = source_name(path)
    rows = read_rows(resolved, data_cfg.format)
    questions: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    seen: set[str] = set()
    first_row_of_id: dict[str, int] = {}
    duplicates = duplicate_ids = 0
    for row_no, record, error, raw in rows:
        try:
            if error is not None:
                raise _Reject(error)
            assert record is not None
            sid = _first_use_of_id(_source_id(record, id_field), row_no, first_row_of_id)
            problem, answer = _validate(record, data_cfg, max_prompt_tokens, count_tokens)
        except _Reject as reject:
            duplicate_ids += isinstance(reject, _DuplicateId)
            rejects.append({"source": source, "row": row_no, "reason": str(reject), "raw": raw})
            continue
        qid = question_id(problem, answer)
        if qid in seen:
            duplicates += 1
            continue
        seen.add(qid)
        questions.append(
            {
                "question_id": qid,
                "problem": problem,
                "answer": answer,
                "source": source,
                "source_row": row_no,
                "source_id": sid,
            }
        )
    qdf, rdf = _frames(questions, rejects, data_cfg)
    stats = {
        "accepted": len(qdf),
        "rejected": len(rdf),
        "duplicates": duplicates,
        "duplicate_source_ids": duplicate_ids,
        "total_rows": len(rows),
        "valid_unique": len(questions),
        "source": source,
    }
    return IngestResult(questions=qdf, rejects=rdf, stats=stats)


class _DuplicateId(_Reject):
    """A row repeating an earlier row's own id."""


def _first_use_of_id(sid: str | None, row_no: int, first_row_of_id: dict[str, int]) -> str | None:
    """``sid`` when no earlier row used it (recording this row as its first use); a
    :class:`_DuplicateId` naming the first row otherwise."""
    if sid is not None:
        first = first_row_of_id.setdefault(sid, row_no)
        if first != row_no:
            raise _DuplicateId(f"duplicate source id {sid[:200]} (first at row {first})")
    return sid


def _frames(
    questions: list[dict[str, Any]], rejects: list[dict[str, Any]], data_cfg: DataConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(questions after shuffle/limit, rejects) as typed frames."""
    qdf = pd.DataFrame(questions, columns=QUESTION_COLUMNS).astype({"source_row": "int64"})
    # no id is None (pandas would make it NaN)
    qdf["source_id"] = pd.Series([q["source_id"] for q in questions], dtype=object)
    if data_cfg.shuffle:
        qdf = qdf.sample(frac=1.0, random_state=data_cfg.seed)
    if data_cfg.limit is not None:
        qdf = qdf.head(data_cfg.limit)
    rdf = pd.DataFrame(rejects, columns=REJECT_COLUMNS).astype({"row": "int64"})
    return qdf.reset_index(drop=True), rdf


def _stem(path: str | Path) -> str:
    text = str(path)
    stem = text[len(BUILTIN_PREFIX) :] if text.startswith(BUILTIN_PREFIX) else Path(text).stem
    return stem or "input"


def default_ingest_dir(home: Path, path: str | Path) -> Path:
    """The output dir of ``path`` under ``home/ingest/``, claimed for it so that no other input
    writes there: ``<stem>/`` when free or already this input's, else ``<stem>-<hash>/`` (a
    hash of the input's resolved path). The claim is a ``SOURCE`` file naming the input."""
    source = source_name(path)
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:10]
    base = Path(home) / "ingest"
    taken: list[str] = []
    for name in (_stem(path), f"{_stem(path)}-{digest}"):
        out = base / name
        out.mkdir(parents=True, exist_ok=True)
        owner = out / SOURCE_FILE
        if not owner.exists() and any(out.iterdir()):
            taken.append(f"{out} holds outputs of an unknown input")  # written before claims
            continue
        try:
            with owner.open("x", encoding="utf-8") as handle:
                handle.write(source + "\n")
            return out
        except FileExistsError:
            pass
        claimed_by = owner.read_text(encoding="utf-8").strip()
        if claimed_by == source:
            return out
        taken.append(f"{out} belongs to {claimed_by}")
    raise InputDataError(
        f"no free ingest output dir for {source}: {'; '.join(taken)}; pass --out DIR"
    )


def write_ingest(result: IngestResult, out_dir: Path) -> dict[str, Path]:
    """Write ``questions.parquet``, ``rejects.parquet`` and a readable ``rejects.jsonl``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "questions_file": out_dir / "questions.parquet",
        "rejects_file": out_dir / "rejects.parquet",
        "rejects_jsonl": out_dir / "rejects.jsonl",
    }
    for key, df in (("questions_file", result.questions), ("rejects_file", result.rejects)):
        tmp = paths[key].with_suffix(".parquet.tmp")
        df.to_parquet(tmp, index=False)
        tmp.replace(paths[key])
    with paths["rejects_jsonl"].open("w", encoding="utf-8") as handle:
        for rec in result.rejects.to_dict(orient="records"):
            handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return paths
