"""`sphere config show`: print the resolved configuration as YAML."""

from __future__ import annotations

import typer

from flows.commands.cli_support import ConfigOpt, PresetOpt, SetOpt, out, resolve_config

config_app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)


@config_app.command("show")
def show(preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the configuration after defaults -> preset -> --config -> --set."""
    cfg = resolve_config(preset, config, set_)
    out.print(cfg.to_yaml(), end="", markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
