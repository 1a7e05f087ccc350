"""The pipeline's decision to skip DPO rests on the generate summary's pair counts."""

from flows.pipeline import pair_count, trained_model_path


def test_pair_count_reads_the_generate_summary():
    assert pair_count({"pairs": {"train": 3, "eval": 1}}) == 4
    assert pair_count({"pairs": {"train": 0, "eval": 0}}) == 0
    assert pair_count({}) == 0 and pair_count(None) == 0


def test_trained_model_path_prefers_the_adapter_keys():
    assert trained_model_path({"adapter_path": "/r/model/adapter", "merged_path": None}) == "/r/model/adapter"
    assert trained_model_path({"skipped": "no pairs"}) is None
