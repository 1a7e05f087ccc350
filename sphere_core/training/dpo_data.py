"""The preference pairs DPO trains on: the pairs file as a ``datasets.Dataset`` holding TRL's
conversational columns only, and the token length of each tokenized pair."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sphere_core.errors import TrainingError

TRL_COLUMNS = ("prompt", "chosen", "rejected")


def load_pairs(path: Path | None, granularities: Sequence[str] | None = None):
    """Pairs file -> ``datasets.Dataset`` with only prompt/chosen/rejected (empty when missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from datasets import Dataset

    if path is None or not Path(path).is_file():
        return None
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise TrainingError(f"cannot read pairs file {path}: {err}") from None
    missing = [c for c in TRL_COLUMNS if c not in table.column_names]
    if missing:
        raise TrainingError(f"pairs file {path} lacks column(s) {', '.join(missing)}")
    if granularities is not None and "granularity" in table.column_names:
        table = table.filter(
            pc.is_in(table["granularity"], value_set=pa.array(list(granularities)))
        )
    table = table.select(list(TRL_COLUMNS)).replace_schema_metadata(None)
    return Dataset(table)


def pair_lengths(dataset) -> list[int]:
    """Tokens of each tokenized pair's longer side (prompt + longer completion)."""
    return [
        len(p) + max(len(c), len(r))
        for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])
    ]
