"""`tff-sparsify run`: an experiment from flags and/or a JSON config file.

Every `ExperimentConfig` field is a flag (`final_sparsity` -> `--final-sparsity`); flags override the
config file. With no arguments: a small FedSparsify-Global run on the embedded digits dataset.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing

from tff_sparsify import experiment


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tff-sparsify", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run or resume an experiment")
    run.add_argument("--config", help="JSON file of ExperimentConfig fields")
    run.add_argument("--output-dir", help="where results go (default: runs/<algorithm>_<dataset>_...)")
    run.add_argument("--stop-after", type=int, help="stop after this many rounds (rerun to resume)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    hints = typing.get_type_hints(experiment.ExperimentConfig)
    for field in dataclasses.fields(experiment.ExperimentConfig):
        kind = next(t for t in (int, float, str) if t is hints[field.name] or t in typing.get_args(hints[field.name]))
        run.add_argument(_flag(field.name), type=kind, default=None, help=f"default: {field.default}")
    return parser


def _config(args: argparse.Namespace) -> experiment.ExperimentConfig:
    values = {}
    if args.config:
        with open(args.config) as f:
            values = json.load(f)
        unknown = set(values) - {f.name for f in dataclasses.fields(experiment.ExperimentConfig)}
        if unknown:
            raise ValueError(f"--config: unknown fields {sorted(unknown)}")
    for field in dataclasses.fields(experiment.ExperimentConfig):
        if getattr(args, field.name) is not None:
            values[field.name] = getattr(args, field.name)
    return experiment.ExperimentConfig(**values)


def _flag_error(error: Exception) -> str:
    """The error message with a config field name at its start written as the flag."""
    message = str(error)
    name = message.split(" ", 1)[0]
    if name in {f.name for f in dataclasses.fields(experiment.ExperimentConfig)}:
        message = _flag(name) + message[len(name):]
    return message


def default_output_dir(config: experiment.ExperimentConfig) -> str:
    sparsity = "" if config.algorithm == "fedavg" else f"_s{config.final_sparsity:g}"
    return os.path.join("runs", f"{config.algorithm}_{config.dataset}_{config.partition}{sparsity}_seed{config.seed}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args = parser.parse_args(argv or ["run"])
    try:
        config = _config(args)
        if args.stop_after is not None and args.stop_after < 1:
            raise ValueError(f"--stop-after must be an integer >= 1, got {args.stop_after}")
    except (ValueError, OSError) as error:
        parser.error(_flag_error(error))
    output_dir = args.output_dir or default_output_dir(config)
    try:
        summary = experiment.run(config, output_dir, stop_after=args.stop_after, progress=not args.quiet)
    except ValueError as error:
        parser.error(_flag_error(error))
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    print(f"results in {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
