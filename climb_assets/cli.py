"""The `climb` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from climb_assets.settings import CONFIG_ENV_VAR, load_settings


def _cmd_run(args: argparse.Namespace) -> int:
    from climb_assets.definitions import build_definitions
    from climb_assets.runner import project_instance, run_pipeline

    settings = load_settings()
    defs = build_definitions(settings)
    with project_instance() as instance:
        run_pipeline(defs, settings, instance, log_level="INFO" if args.verbose else "WARNING")
    print(f"outputs are under {settings.output_dir.resolve()}")
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    settings = load_settings()
    print(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="climb",
        description="CLIMB data-mixture search as Dagster assets. Run from the project root.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help=f"settings YAML overriding the defaults (default: ${CONFIG_ENV_VAR} if set)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="materialize every asset in dependency order")
    run.add_argument("-v", "--verbose", action="store_true", help="show Dagster's step logs")
    run.set_defaults(func=_cmd_run)

    config = sub.add_parser("config", help="inspect settings")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the effective settings as YAML")
    show.set_defaults(func=_cmd_config_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    if args.config is not None:
        # Through the environment so every Dagster step process sees the same settings.
        os.environ[CONFIG_ENV_VAR] = str(args.config.resolve())
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"climb: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
