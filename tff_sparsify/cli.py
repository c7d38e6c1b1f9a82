"""The `tff-sparsify` command line.

- `run`: an experiment from flags and/or a JSON config file. Every `ExperimentConfig` field and every
  algorithm's option is a flag (`final_sparsity` -> `--final-sparsity`); flags override the file.
  With no arguments: a small FedSparsify-Global run on the embedded digits dataset.
- `export RUN_DIR`: the run's final model as a sparse SavedModel and .tflite, checked against Keras.
- `compare --algorithms A,B,...`: several algorithms on the same partition, then `table` over them.
- `bench MODEL.tflite ...`: TFLite latency and throughput, with factors relative to the first file.
- `table RUN_DIR ...`: the paper's results table and comparison plots across runs (first = reference).
- `grid list|run|summary [CELL_PATTERN ...]`: the paper's experiment grid (`tff_sparsify.grid`), one
  cell, a selection (shell patterns such as `fashion_mnist_noniid2/global_*`) or all of it.
- `worker --port P`: a TFF worker that `run --workers host:P,...` sends rounds to (unauthenticated:
  keep it on a private network; README, "Past one machine").
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import typing
from typing import Callable

from tff_sparsify import algorithms, checks, files, layout
from tff_sparsify.algorithms.fedsparsify_local import AVERAGE_OVER
from tff_sparsify.config import DATASETS, MODELS, ExperimentConfig
from tff_sparsify.core.partitions import PARTITIONS
from tff_sparsify.errors import RunError

# TensorFlow loads only when a command runs (tff_sparsify's modules below `config` import it), so a
# usage error answers at once. Before it loads: hide its C++ logs, among them the "Unable to register
# cuDNN/cuFFT/cuBLAS factory" errors TensorFlow 2.14 prints at every import on a CPU machine (errors
# that matter reach Python as exceptions); TF_CPP_MIN_LOG_LEVEL=0 in the environment shows them all.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _Parser(argparse.ArgumentParser):
    """A usage error is one line, not the whole usage text (`--help` shows that)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Stopped(KeyboardInterrupt):
    """SIGINT (Ctrl-C), SIGTERM or SIGHUP, raised in the main thread so that every cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
REDELIVERY_SECONDS = 0.1


@contextlib.contextmanager
def _signals_stop_the_command():
    """SIGINT, SIGTERM and SIGHUP raise `_Stopped` while the command runs (main thread only; a signal
    ignored on entry, as `nohup` or a shell's `&` ignore SIGHUP or SIGINT, stays ignored). One stop
    only: later signals do not interrupt the cleanup it starts. Python swallows an exception raised
    in a gc callback or finalizer (TensorFlow runs one at every garbage collection), which would lose
    the stop: a swallowed stop is delivered again shortly after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {"active": True, "stopping": False}
    guard = threading.Lock()

    def stop(signum, frame):
        if not state["stopping"]:
            state["stopping"] = True
            raise _Stopped(signum)

    def redeliver(signum):
        with guard:
            if state["active"]:
                os.kill(os.getpid(), signum)

    def redeliver_swallowed_stop(unraisable):
        if isinstance(unraisable.exc_value, _Stopped):
            state["stopping"] = False  # That stop was lost: the next delivery raises again.
            threading.Timer(REDELIVERY_SECONDS, redeliver, (unraisable.exc_value.signum,)).start()
        else:
            previous_hook(unraisable)

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    previous_hook, sys.unraisablehook = sys.unraisablehook, redeliver_swallowed_stop
    for s in previous:
        signal.signal(s, stop)
    try:
        yield
    finally:
        with guard:
            state["active"] = False
        for s, handler in previous.items():
            signal.signal(s, handler)
        sys.unraisablehook = previous_hook


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tff-sparsify", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run or resume an experiment")
    run.add_argument("--output-dir", help="where results go (default: runs/<algorithm>_<dataset>_...)")
    compare = commands.add_parser("compare", help="run several algorithms on the same partition, then table")
    compare.add_argument("--algorithms", required=True, help="comma-separated; the first is the reference")
    compare.add_argument("--output-dir", default="runs/compare", help="one run folder per algorithm, and the table")
    for command in (run, compare):
        command.add_argument("--config", help="JSON file of ExperimentConfig fields")
        command.add_argument("--stop-after", type=int, help="stop after this many rounds (rerun to resume)")
        command.add_argument("--quiet", action="store_true", help="no progress bar")
        _add_config_flags(command)
    _add_export_commands(commands)
    _add_grid_command(commands)
    worker = commands.add_parser("worker", help="a TFF worker for run --workers (private networks only)")
    worker.add_argument("--port", type=int, required=True, help="TCP port, on every network interface")
    worker.add_argument("--max-concurrent-calls", type=int,
                        help="computations it runs at once (default: one per CPU core)")
    return parser


def _config_keys() -> dict[str, tuple]:
    """Every config key -> (its dataclass, its default, the algorithms it applies to or None for all):
    the fields of `ExperimentConfig`, then the algorithms' options."""
    keys = {f.name: (ExperimentConfig, f.default, None) for f in dataclasses.fields(ExperimentConfig)
            if f.name != "options"}
    for name, owners in algorithms.option_owners().items():
        options = algorithms.get(owners[0]).options
        default = next(f.default for f in dataclasses.fields(options) if f.name == name)
        keys[name] = (options, default, owners)
    return keys


def _field_type(name: str) -> Callable[[str], object]:
    """The parser of a value of the config key `name` (optional or not): int, float, str, or for bool
    fields one accepting true/false."""
    hint = typing.get_type_hints(_config_keys()[name][0])[name]
    if hint is bool:
        return _parse_bool
    return next(t for t in (int, float, str) if t is hint or t in typing.get_args(hint))


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}")
    return int(value)


def _parse_bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(f"expected true or false, got {value!r}")
    return value.lower() == "true"


ALLOWED_VALUES = {  # Listed in --help; checked by ExperimentConfig and the algorithms.
    "dataset": DATASETS, "model": MODELS, "partition": PARTITIONS, "vote_average_over": AVERAGE_OVER,
}


def _add_config_flags(command) -> None:
    for name, (_, default, owners) in _config_keys().items():
        if name == "algorithm":
            help_text = "; ".join(f"{a.name}: {a.summary}" for a in map(algorithms.get, algorithms.names()))
            help_text += f"; default: {default}"
        else:
            allowed = ALLOWED_VALUES.get(name)
            help_text = (f"one of {', '.join(allowed)}; " if allowed else "") + f"default: {default}"
        if owners:
            help_text = f"({', '.join(owners)}) {help_text}"
        if _field_type(name) is _parse_bool:
            command.add_argument(_flag(name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            command.add_argument(_flag(name), type=_field_type(name), default=None, help=help_text)


def _add_export_commands(commands) -> None:
    export_cmd = commands.add_parser("export", help="export a finished run for devices")
    export_cmd.add_argument("run_dir")
    export_cmd.add_argument("--output-dir", help="default: RUN_DIR/export (RUN_DIR/export_dynamic_int8)")
    export_cmd.add_argument("--quantize", default="none", choices=layout.QUANTIZE_MODES)
    export_cmd.add_argument("--no-sparsity", action="store_true",
                            help="without TFLite's sparsity optimization (by default used if it makes the "
                                 "file smaller gzipped and both runtimes can run it)")
    bench = commands.add_parser("bench", help="TFLite latency and throughput")
    bench.add_argument("tflite", nargs="+", help="the first file is the reference for the factors")
    table = commands.add_parser("table", help="the paper's results table across finished runs")
    table.add_argument("run_dirs", nargs="+", help="the first run is the reference (e.g. FedAvg)")
    table.add_argument("--output-dir", default="results")
    for command in (bench, table):
        command.add_argument("--batch-size", type=_positive_int, help="default: the paper's (32 FMNIST, 128 CIFAR)")
        command.add_argument("--threads", type=_positive_int, default=1)
        command.add_argument("--repeats", type=_positive_int, default=200)
        command.add_argument("--runtime", default="tf", choices=layout.RUNTIMES,
                             help="tf (TensorFlow's interpreter) or litert")


def _add_grid_command(commands) -> None:
    grid_cmd = commands.add_parser("grid", help="the paper's experiment grid: list, run or summarize cells")
    grid_cmd.add_argument("action", choices=("list", "run", "summary"))
    grid_cmd.add_argument("cells", nargs="*", default=["*"], help="cell names or shell patterns (default: all)")
    grid_cmd.add_argument("--runs-dir", default="experiments/results", help="one folder per cell: <group>/<run>")
    grid_cmd.add_argument("--data-path", action="append", default=[], metavar="DATASET=NPZ",
                          help="a local .npz for a dataset instead of TFDS (repeatable)")
    grid_cmd.add_argument("--override", action="append", default=[], metavar="FIELD=VALUE",
                          help="replace a config field in every selected cell, e.g. rounds=2 (repeatable)")
    grid_cmd.add_argument("--stop-after", type=int, help="run: stop each cell after this many rounds")
    grid_cmd.add_argument("--quiet", action="store_true", help="run: no progress bars")


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise ValueError(f"{flag} expects KEY=VALUE, got {value!r}")
        pairs[key] = rest
    return pairs


def _overrides(values: list[str]) -> dict:
    """`--override` values converted to the types of the config keys they name."""
    keys = _config_keys()
    overrides = {}
    for name, value in _pairs(values, "--override").items():
        if name not in keys:
            raise ValueError(f"--override: unknown field {name!r}")
        try:
            overrides[name] = _field_type(name)(value)
        except ValueError as error:
            raise ValueError(f"--override {name}: {error}") from None
    return overrides


def _grid(args) -> None:
    from tff_sparsify import grid  # TensorFlow-free until cells run or are summarized.

    overrides = _overrides(args.override)
    cells = grid.select(grid.paper_grid(_pairs(args.data_path, "--data-path"), **overrides), args.cells)
    _check_options_apply(overrides, {c.algorithm for c in cells.values()}, "the selected cells")
    if args.action == "run":
        done = grid.run_cells(cells, args.runs_dir, stop_after=args.stop_after, progress=not args.quiet,
                              on_cell=lambda name, s: print(f"{name}: {s['rounds_completed']} rounds done"))
        print(f"{len(done)} cell(s) in {args.runs_dir}")
    elif args.action == "summary":
        for group, rows in grid.summarize(args.runs_dir, cells).items():
            print(grid.reproduction_markdown(group, rows) + "\n")
        print(f"tables and plots in {args.runs_dir}/<group>/table")
    else:
        for name, config in cells.items():
            s = grid.status(args.runs_dir, name, config)
            state = "done" if s["completed"] else f"{s['rounds_done']}/{s['rounds']} rounds"
            accuracy = "" if s["accuracy"] is None else f"  accuracy {s['accuracy']:.4f}"
            print(f"{name:45s} {state:>16s}  {s['hours']:6.2f} h{accuracy}")


def _export(args) -> None:
    config = layout.finished_run(args.run_dir, "RUN_DIR")["config"]
    suffix = "" if args.quantize == "none" else f"_{args.quantize}"
    output_dir = _output_dir(args.output_dir) or os.path.join(args.run_dir, "export" + suffix)
    from tff_sparsify import export, report  # Once the arguments are checked: TensorFlow loads here.

    result = export.export_run(args.run_dir, output_dir, quantize=args.quantize,
                               sparsity=not args.no_sparsity, test_x=report.scaled_test_images(config))
    shown = ("tflite", "tflite_size", "encoding", "parity")
    print(json.dumps({k: result[k] for k in shown if k in result}, indent=2))
    print(f"exported to {output_dir} ({result['encoding']['chosen']} encoding: {result['encoding']['reason']})")


def _bench(args) -> None:
    for path in args.tflite:
        layout.check_tflite(path, "TFLITE")
    from tff_sparsify import export  # Once the arguments are checked: TensorFlow loads here.

    batch_size = args.batch_size or 32
    reference = None
    for path in args.tflite:
        result = export.benchmark_tflite(path, batch_size, threads=args.threads, repeats=args.repeats,
                                         runtime=args.runtime)
        reference = reference or result
        print(f"{path}: {result.median_ms:.3f} ms/batch of {batch_size} (p90 {result.p90_ms:.3f}), "
              f"{result.items_per_second:,.0f} items/s, x{reference.median_ms / result.median_ms:.2f} "
              f"vs {args.tflite[0]} ({result.threads} thread(s), {result.runtime}: {result.kernels})")


def _table(args) -> None:
    for run_dir in args.run_dirs:
        layout.finished_run(run_dir, "RUN_DIRS")
    _output_dir(args.output_dir)
    from tff_sparsify import report  # Once the arguments are checked: TensorFlow loads here.

    rows = report.write_table(args.run_dirs, args.output_dir, threads=args.threads, repeats=args.repeats,
                              runtime=args.runtime, batch_size=args.batch_size)
    print(report.markdown(rows))
    print(f"table and plots in {args.output_dir}")


def _config(args: argparse.Namespace, **replace) -> ExperimentConfig:
    """The config of the flags and `--config` file, with `replace`d fields (compare's algorithms, which
    take the options they have and leave the others)."""
    values = {}
    if args.config:
        checks.file("--config", args.config, "JSON file")
        with open(args.config, "rb") as f:
            try:
                values = json.loads(f.read().decode())
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ValueError(f"--config {args.config!r}: not valid JSON ({error})") from None
        if not isinstance(values, dict):
            raise ValueError(f"--config {args.config!r}: expected a JSON object of config fields")
        unknown = set(values) - set(_config_keys())
        if unknown:
            raise ValueError(f"--config: unknown fields {sorted(unknown)}")
    from_file = {name for name in values if getattr(args, name) is None}
    for name in _config_keys():
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    try:
        return ExperimentConfig.from_dict({**values, **replace}, ignore_other_algorithms=bool(replace))
    except ValueError as error:  # A field from the file is named as written there, with the file.
        if str(error).split(" ", 1)[0] in from_file:
            raise ValueError(f"--config {args.config!r}: {error}") from None
        raise


def _flag_error(error: Exception, args: argparse.Namespace) -> str:
    """The error message with a config field or option name at its start written as the user wrote it:
    the flag, or for the grid (whose cells are valid) the `--override` that set it."""
    message = str(error)
    name = message.split(" ", 1)[0].rstrip(":")
    fields = set(_config_keys())
    if args.command == "grid" and name in fields:
        return f"--override {name}=...: {message}"
    if name in fields | set(vars(args)):
        message = _flag(name) + message[len(name):]
    return message


def _check_data_path(config: ExperimentConfig, args: argparse.Namespace) -> None:
    """`data_path` names a file (its contents are checked when the data loads); the error names the
    flag, or the config file the path came from."""
    if config.data_path is None:
        return
    try:
        checks.file("data_path", config.data_path, ".npz file")
    except OSError as error:
        raise ValueError(f"--config {args.config!r}: {error}" if args.data_path is None else str(error)) from None


def _check_free(output_dir: str) -> None:
    """Fails now, not once TensorFlow has loaded, if another run holds `output_dir` (the run itself
    then holds the lock for its whole length)."""
    with files.exclusive_lock(output_dir):
        pass


def _output_dir(value: str | None) -> str | None:
    """`--output-dir` as given, refused if empty or an existing file."""
    if value is not None and (not value.strip() or os.path.isfile(value)):
        raise ValueError(f"--output-dir must name a directory, got {value!r}"
                         + (" (an existing file)" if value.strip() else ""))
    return value


def default_output_dir(config: ExperimentConfig) -> str:
    sparsity = f"_s{config.final_sparsity:g}" if algorithms.get(config.algorithm).prunes else ""
    return os.path.join("runs", f"{config.algorithm}_{config.dataset}_{config.partition}{sparsity}_seed{config.seed}")


def _run(args) -> None:
    config = _config(args)
    _check_data_path(config, args)
    output_dir = _output_dir(args.output_dir) or default_output_dir(config)
    _check_free(output_dir)
    from tff_sparsify import experiment  # Once the arguments are checked: TensorFlow loads here.

    summary = experiment.run(config, output_dir, stop_after=args.stop_after, progress=not args.quiet)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    print(f"results in {output_dir}")


def _compare(args) -> None:
    names = [a.strip() for a in args.algorithms.split(",")]
    if len(set(names)) != len(names):
        raise ValueError(f"--algorithms names an algorithm twice: {args.algorithms!r}")
    configs = [_config(args, algorithm=name) for name in names]
    _check_options_apply([k for k in _config_keys() if getattr(args, k) is not None], names,
                         f"--algorithms {args.algorithms}")
    _check_data_path(configs[0], args)
    run_dirs = [os.path.join(_output_dir(args.output_dir), config.algorithm) for config in configs]
    for run_dir in run_dirs:
        _check_free(run_dir)
    from tff_sparsify import experiment, report  # Once the arguments are checked: TensorFlow loads here.

    for config, run_dir in zip(configs, run_dirs):  # All configs are valid before any run starts.
        experiment.run(config, run_dir, stop_after=args.stop_after, progress=not args.quiet)
    rows = report.write_table(run_dirs, args.output_dir)
    print(report.markdown(rows))
    print(f"runs, table and plots in {args.output_dir}")


def _check_options_apply(options, names, chosen: str) -> None:
    """Every algorithm option in `options` applies to one of the algorithms `names` at least (`compare`
    and the grid give each algorithm only the options it takes)."""
    owners = algorithms.option_owners()
    for option in options:
        if option in owners and not set(owners[option]) & set(names):
            raise ValueError(f"{option} applies to {', '.join(owners[option])} only, none of {chosen}")


def _worker(args) -> None:
    checks.integer("--port", args.port, 1, 65535)
    if args.max_concurrent_calls is not None:
        checks.integer("--max-concurrent-calls", args.max_concurrent_calls)
    from tff_sparsify import distributed  # Once the arguments are checked: TensorFlow loads here.

    status = distributed.serve(args.port, args.max_concurrent_calls, say=lambda line: print(line, flush=True))
    if status:
        raise RunError(f"the TFF worker exited with status {status} (is port {args.port} in use?)")


COMMANDS = {"run": _run, "compare": _compare, "export": _export, "bench": _bench, "table": _table, "grid": _grid,
            "worker": _worker}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args, extra = parser.parse_known_args(argv or ["run"])
    if extra and args.command == "grid" and not any(e.startswith("-") for e in extra):
        args.cells = [c for c in args.cells if c != "*"] + extra or ["*"]  # Cell patterns after options.
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        with _signals_stop_the_command():
            if getattr(args, "stop_after", None) is not None and args.stop_after < 1:
                raise ValueError(f"--stop-after must be an integer >= 1, got {args.stop_after}")
            COMMANDS[args.command](args)
    except (ValueError, OSError, RunError) as error:
        _Parser(prog=f"tff-sparsify {args.command}").error(_flag_error(error, args))
    except KeyboardInterrupt as interrupt:
        signum = interrupt.signum if isinstance(interrupt, _Stopped) else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        print(f"tff-sparsify: {what}; run the same command again to resume after the last completed round",
              file=sys.stderr)
        return 128 + signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
