"""Config precedence (defaults -> preset -> YAML -> --set) and error messages."""

from __future__ import annotations

import pytest
import yaml

from flows.cli import main
from sphere_core.config import PRESETS, SphereConfig, resolve_config
from sphere_core.errors import ConfigError


def test_defaults_are_the_paper_settings():
    cfg = resolve_config()
    assert cfg.search.num_candidates == 5
    assert cfg.search.temperature == 0.8
    assert cfg.search.small_candidates_factor == 2
    assert cfg.training.beta == 0.8
    assert cfg.training.learning_rate == 1e-6
    assert cfg.training.warmup_ratio == 0.2
    assert (cfg.training.lora_r, cfg.training.lora_alpha, cfg.training.lora_dropout) == (
        64,
        128,
        0.05,
    )
    assert cfg.evaluation.temperature == 0.1 and cfg.evaluation.top_k == 50


def test_precedence_preset_then_yaml_then_set(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"search": {"num_candidates": 7, "max_depth": 3}}))
    cfg = resolve_config(preset="demo", file=cfg_file, overrides=["search.max_depth=2"])
    assert cfg.data.limit == PRESETS["demo"]["data"]["limit"]  # from the preset
    assert cfg.search.num_candidates == 7  # YAML beats preset
    assert cfg.search.max_depth == 2  # --set beats YAML
    assert cfg.search.temperature == 0.8  # untouched default


def test_set_parses_types_and_nested_models():
    cfg = resolve_config(
        overrides=[
            "data.limit=4",
            "prm.kind=mc-rollout",
            "models.small.path=/models/small",
            "routing.stages=[stage1, stage2]",
            "search.keep_fraction=0.4",
            "data.limit=null",
        ]
    )
    assert cfg.data.limit is None
    assert cfg.prm.kind == "mc-rollout"
    assert cfg.models.small is not None and cfg.models.small.path == "/models/small"
    assert cfg.small_model.path == "/models/small"
    assert cfg.routing.stages == ["stage1", "stage2"]
    assert cfg.search.keep_fraction == 0.4


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("search.bogus=1", "unknown config key 'search.bogus'"),
        ("nosuch.key=1", "unknown config key 'nosuch'"),
        ("search.num_candidates=0", "'search.num_candidates'"),
        ("search.temperature=hot", "'search.temperature'"),
        ("routing.stages=[stage2]", "routing.stages must include stage1"),
        ("data.limit", "dotted.key=value"),
        ("prm.kind=nosuch", "invalid config value for 'prm.kind': unknown PRM 'nosuch'"),
        ("orm.kind=nosuch", "invalid config value for 'orm.kind': unknown ORM 'nosuch'"),
        (
            "models.policy.backend=nosuch",
            "'models.policy.backend': unknown generator backend 'nosuch'",
        ),
        ("models.small={backend: nosuch}", "'models.small.backend': unknown generator backend"),
        ("prm.model={backend: vlm}", "'prm.model.backend': unknown generator backend 'vlm'"),
        (
            "evaluation.benchmarks=[gsm8k, nosuch]",
            "'evaluation.benchmarks': unknown benchmark 'nosuch'",
        ),
        ("routing.stages=[stage1, stage9]", "unknown stage 'stage9'"),
        ("routing.stages=[stage1, stage3, stage2, stage2]", None),
    ],
)
def test_bad_overrides_name_the_key(assignment, message):
    if message is None:  # valid: order and repeats of stage names do not matter
        assert resolve_config(overrides=[assignment]).routing.stages
        return
    with pytest.raises(ConfigError) as err:
        resolve_config(overrides=[assignment])
    assert message in str(err.value)


def test_stage_needs_its_upstream_stage():
    from sphere_core.stages import all_stages

    assert [s.name for s in all_stages()] == ["stage1", "stage2", "stage3"]
    from sphere_core.stages import check_selection

    with pytest.raises(ConfigError, match="must include stage1"):
        check_selection(["stage2"])
    # a base config (a stored run) is applied before preset, file and overrides
    base = resolve_config(overrides=["search.max_depth=7", "data.limit=3"]).to_dict()
    cfg = resolve_config(
        preset="demo", file={"data": {"limit": 5}}, overrides=["search.seed=9"], base=base
    )
    assert cfg.data.limit == 5 and cfg.search.seed == 9
    assert (
        cfg.search.max_depth == resolve_config(preset="demo").search.max_depth
    )  # the preset wins over base


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve_config(file=bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("training:\n  betta: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'training.betta'"):
        resolve_config(file=unknown)


def test_config_show_round_trips(capsys):
    assert main(["config", "show", "--preset", "demo", "--set", "search.max_depth=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    cfg = SphereConfig.model_validate(shown)
    assert cfg.search.max_depth == 3
    assert cfg == resolve_config(preset="demo", overrides=["search.max_depth=3"])


def test_cli_config_error_is_one_line_exit_2(capsys):
    assert main(["config", "show", "--set", "search.bogus=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown config key 'search.bogus'"]


def test_section_hash_changes_only_with_its_section():
    a = resolve_config()
    b = resolve_config(overrides=["training.beta=0.5"])
    assert a.section_hash("search", "prm") == b.section_hash("search", "prm")
    assert a.section_hash("training") != b.section_hash("training")
