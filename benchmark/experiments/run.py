"""Command line: run one experiment and print its result record as JSON.

    python -m benchmark run --experiment fit --dataset gaussian --method wasserstein \\
        --codebook-size 1024 --dim 8 --steps 500 --batch-size 4096 --seed 0 \\
        --dataset-option mean=4 --method-option gamma=10 --progress

Every :class:`~benchmark.experiments.config.RunConfig` field is a flag (``--codebook-size`` for
``codebook_size``); option mappings are given as repeated ``KEY=VALUE`` flags whose values are
parsed with ``yaml.safe_load`` (``4`` -> int, ``0.1`` and ``1e-3`` -> float, ``true`` -> bool, ``abc`` -> str).
Exit status: 0 on success, 2 on a bad argument or setting, 3 when the run diverged.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Sequence

import yaml

from benchmark.experiments.config import ConfigError, RunConfig

_OPTION_FIELDS = {"dataset_options": "dataset-option", "method_options": "method-option", "model_options": "model-option"}


def _parse_value(text: str) -> Any:
    """YAML scalar; strings that Python reads as a number (YAML 1.1 keeps ``1e-3``) become floats."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _parse_options(pairs: Sequence[str] | None, flag: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--{flag}: expected KEY=VALUE, got {pair!r}")
        options[key.strip()] = _parse_value(value)
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark run",
        description="Run one vqbench experiment (fit, vqvae or transplant) and print the result record as JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = RunConfig()
    for f in dataclasses.fields(RunConfig):
        if f.name in _OPTION_FIELDS:
            flag = _OPTION_FIELDS[f.name]
            parser.add_argument(
                f"--{flag}",
                dest=f.name,
                action="append",
                metavar="KEY=VALUE",
                help=f"one entry of {f.name} (repeatable; VALUE parsed as YAML)",
            )
            continue
        default = getattr(defaults, f.name)
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=type(default),
            default=default,
            help=f"RunConfig.{f.name}",
        )
    parser.add_argument("--progress", action="store_true", help="show a tqdm progress bar on stderr")
    parser.add_argument("--indent", type=int, default=None, help="indent the JSON output")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    values = {}
    for f in dataclasses.fields(RunConfig):
        value = getattr(args, f.name)
        if f.name in _OPTION_FIELDS:
            value = _parse_options(value, _OPTION_FIELDS[f.name])
        values[f.name] = value
    return RunConfig.from_dict(values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)  # bad settings fail here, before torch is imported
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from benchmark.experiments.train import DivergedError, run_experiment

    try:
        record = run_experiment(config, progress=args.progress)
    except DivergedError as err:
        print(f"error: run diverged: {err}", file=sys.stderr)
        return 3
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(record, indent=args.indent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
