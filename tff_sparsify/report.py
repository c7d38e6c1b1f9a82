"""The paper's results table (tables 1-2) across finished runs, each factor relative to a reference.

For every run directory: accuracy (mean test accuracy of the last 10 rounds, fewer in a shorter
run, and the final round), sparsity, nonzero parameters, communication cost (paper appendix C), gzip
size of the exported .tflite (the paper's "Model Size"), and TFLite latency / throughput on the
paper's batch size. The first run is the reference (normally dense FedAvg) for the x-factors. Runs
are exported on demand to `<run>/export/`.
"""
from __future__ import annotations

import json
import os

import numpy as np

from tff_sparsify import checks, data, export, files, layout, plots
from tff_sparsify.config import MEAN_ACCURACY, ExperimentConfig, last_rounds_label

PAPER_BATCH_SIZE = {"digits": 32, "fashion_mnist": 32, "cifar10": 128, "cifar100": 128}


def run_row(run_dir: str, *, quantize: str = "none", threads: int = 1, repeats: int = 200,
            runtime: str = "tf", batch_size: int | None = None) -> dict:
    """One table row for a finished run, exporting it first if `<run>/export` does not exist."""
    summary = layout.finished_run(run_dir)
    config = ExperimentConfig.from_saved(summary["config"]).to_dict()  # Also a config of an older version.
    export_dir = os.path.join(run_dir, "export" if quantize == "none" else f"export_{quantize}")
    tflite = os.path.join(export_dir, export.TFLITE_FILE)
    if os.path.exists(tflite):
        with open(os.path.join(export_dir, export.REPORT_FILE)) as f:
            exported = json.load(f)
    else:
        exported = export.export_run(run_dir, export_dir, quantize=quantize, test_x=scaled_test_images(config))
    batch_size = batch_size or PAPER_BATCH_SIZE[config["dataset"]]
    bench = export.benchmark_tflite(tflite, batch_size, threads=threads, repeats=repeats,
                                    runtime=runtime)
    return {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "algorithm": config["algorithm"],
        "method": _method(config),
        "target_sparsity": config.get("final_sparsity", 0.0),  # 0 for a dense algorithm.
        "sparsity": summary["final_sparsity"],
        "accuracy": summary[MEAN_ACCURACY],
        "final_accuracy": summary["final_test_accuracy"],
        # The final model's, with the clients' recalibrated BatchNorm statistics (None: not recalibrated).
        "recalibrated_accuracy": (summary.get("batch_norm_recalibration") or {}).get("test_accuracy"),
        "rounds": summary["rounds_completed"],
        "params": summary["final_nonzero_params"],
        "comm_params": summary["communication"]["params"],
        "comm_mbit": summary["communication"]["mbit"],
        # Training FLOPs and peak device memory relative to dense training (None: not measured).
        "flops_x": summary.get("compute", {}).get("flops_relative_to_dense"),
        "memory_x": summary.get("compute", {}).get("memory_relative_to_dense"),
        "gzip_mb": exported["tflite_size"]["gzip_bytes"] / 1e6,
        "tflite_mb": exported["tflite_size"]["raw_bytes"] / 1e6,
        "latency_ms": bench.median_ms,
        "items_per_s": bench.items_per_second,
        "batch_size": batch_size,
        "threads": bench.threads,
        "runtime": runtime,
    }


def _method(config: dict) -> str:
    """The algorithm, with its block size when pruning is block-structured."""
    block = config.get("block_size", "1x1")
    return config["algorithm"] + ("" if block == "1x1" else f" ({block} blocks)")


def scaled_test_images(config: dict) -> np.ndarray:
    """The run's test images as the model sees them (float32 in [0, 1])."""
    dataset = data.load_dataset(config["dataset"], path=config["data_path"])
    return np.asarray(dataset.scaled(dataset.x_test))


# Columns where the reference divided by the run is the "x less / x faster" factor, and the reverse.
SMALLER_IS_BETTER = ("params", "comm_params", "gzip_mb", "latency_ms")
LARGER_IS_BETTER = ("items_per_s",)


def with_factors(rows: list[dict]) -> list[dict]:
    """Adds `<column>_x` factors relative to the first row (the paper's "(x N)" annotations)."""
    reference = rows[0]
    return [
        {
            **row,
            **{f"{c}_x": reference[c] / row[c] for c in SMALLER_IS_BETTER},
            **{f"{c}_x": row[c] / reference[c] for c in LARGER_IS_BETTER},
        }
        for row in rows
    ]


def markdown(rows: list[dict]) -> str:
    """The table as Markdown, in the paper's layout."""
    last = last_rounds_label(r["rounds"] for r in rows)
    header = (f"| run | sparsity | accuracy (last {last} / final) | params | comm. cost (M params) | "
              "training FLOPs (x dense) | device memory (x dense) | "
              "gzip size (MB) | latency (ms) | throughput (items/s) |")
    lines = [header, "|" + " --- |" * 10]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['sparsity']:.4f} | {r['accuracy']:.4f} / {r['final_accuracy']:.4f}"
            f"{_recalibrated(r.get('recalibrated_accuracy'))} | "
            f"{r['params']:,} (x{r['params_x']:.2f}) | {r['comm_params'] / 1e6:,.1f} (x{r['comm_params_x']:.2f}) | "
            f"{_ratio(r['flops_x'])} | {_ratio(r['memory_x'])} | "
            f"{r['gzip_mb']:.3f} (x{r['gzip_mb_x']:.2f}) | {r['latency_ms']:.3f} (x{r['latency_ms_x']:.2f}) | "
            f"{r['items_per_s']:,.0f} (x{r['items_per_s_x']:.2f}) |"
        )
    batch, threads, runtime = rows[0]["batch_size"], rows[0]["threads"], rows[0]["runtime"]
    lines.append(f"\nAccuracy: mean test accuracy of the last {last} rounds / final "
                 f"round{RECALIBRATED_NOTE if any(r.get('recalibrated_accuracy') is not None for r in rows) else ''}. "
                 f"Latency: median per batch of {batch}, {threads} thread(s), {runtime} interpreter. "
                 "Training FLOPs over the run and peak on-device memory (activations apart) relative to dense "
                 "training; other factors (x) relative to the first row.")
    return "\n".join(lines)


RECALIBRATED_NOTE = (" (in brackets: the final model with the BatchNorm statistics the clients recalibrated "
                     "after the last round, `recalibrate_batch_norm`)")


def _recalibrated(accuracy: float | None) -> str:
    return "" if accuracy is None else f" ({accuracy:.4f})"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def write_table(run_dirs: list[str], output_dir: str, **kwargs) -> list[dict]:
    """Builds the table for `run_dirs`; writes table.csv, table.md, table.json and comparison plots."""
    if not run_dirs:
        raise ValueError("run_dirs must name at least one finished run")
    checks.choice("runtime", kwargs.get("runtime", "tf"), layout.RUNTIMES)
    for run_dir in run_dirs:  # All are checked before the first is exported.
        layout.finished_run(run_dir)
    rows = with_factors([run_row(d, **kwargs) for d in run_dirs])
    os.makedirs(output_dir, exist_ok=True)
    files.write_json(os.path.join(output_dir, "table.json"), rows)
    files.write_text(os.path.join(output_dir, "table.md"), markdown(rows) + "\n")
    files.write_csv(os.path.join(output_dir, "table.csv"), rows)
    histories = {}
    for d in run_dirs:
        with open(os.path.join(d, "history.json")) as f:
            histories[os.path.basename(os.path.normpath(d))] = json.load(f)
    plots.plot_comparison(rows, histories, os.path.join(output_dir, "comparison.png"))
    return rows
