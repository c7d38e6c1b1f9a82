"""What a run folder and its exports hold, by name, and the checks on them that need no TensorFlow
(the command line answers a wrong folder or option at once, before TensorFlow loads)."""
from __future__ import annotations

import os

from tff_sparsify import checks, files

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"  # Written last: the run is complete.
CHECKPOINT_FILE = "checkpoint.npz"
FINAL_MODEL_FILE = "final_model.keras"
QUANTIZE_MODES = ("none", "dynamic_int8")  # Exports: float32 or int8 weights.
RUNTIMES = ("tf", "litert")  # TFLite interpreters: TensorFlow's, or LiteRT's (phones).
TFLITE_FILE = "model.tflite"
TFLITE_IDENTIFIER = b"TFL3"  # A .tflite flatbuffer's file identifier, at bytes 4-8.


def finished_run(run_dir: str, name: str = "run_dir") -> dict:
    """The summary of the finished run in `run_dir`; otherwise a ValueError naming `name` (the
    argument as the user wrote it), the folder and what is missing."""
    if not os.path.isdir(run_dir):
        raise ValueError(f"{name} {run_dir!r}: no such directory")
    summary = files.read_json(os.path.join(run_dir, SUMMARY_FILE))
    model = os.path.join(run_dir, FINAL_MODEL_FILE)
    if summary is None or not summary.get("completed"):
        done = "" if summary is None else f" ({summary['rounds_completed']} rounds done)"
        raise ValueError(f"{name} {run_dir!r} holds no finished run{done}; run or resume it with "
                         f"tff-sparsify run --config {os.path.join(run_dir, CONFIG_FILE)} --output-dir {run_dir}")
    if not os.path.exists(model):
        raise ValueError(f"{name} {run_dir!r} holds a finished run without its {FINAL_MODEL_FILE}")
    return summary


def check_tflite(path: str, name: str = "tflite") -> None:
    """An error naming `name` unless `path` is a file that begins like a .tflite flatbuffer."""
    checks.file(name, path, ".tflite file")
    with open(path, "rb") as f:
        if f.read(8)[4:] != TFLITE_IDENTIFIER:
            raise ValueError(f"{name} {path!r}: not a .tflite model (no TFL3 identifier)")
