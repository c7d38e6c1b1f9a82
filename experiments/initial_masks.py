"""The masks a run starts from, layer by layer: for each RUN_DIR, its algorithm's initial masks
rebuilt from its `config.json` (seeded as the run was; chosen from data where the algorithm does:
SNIP, GraSP, PruneFL, FedTiny), as kept / total weights per prunable kernel. Shows, e.g., whether
a global ranking at 1% density left a layer empty before training began.

    .venv/bin/python experiments/initial_masks.py RUN_DIR... [--data-path NPZ]

(--data-path: where the run's data file is now, if it moved since the run.)

Writes RUN_DIR/initial_masks.json.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from tff_sparsify import experiment, files


def initial_masks(config: experiment.ExperimentConfig) -> list[dict]:
    """One {shape, kept, total} per prunable kernel, in layer order."""
    task, weights = experiment.initial_weights(config)
    return [{"shape": list(np.shape(mask)), "kept": int(np.count_nonzero(mask)), "total": int(np.size(mask))}
            for mask in task.layout.masks(weights.non_trainable)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--data-path", help="the run's data file (default: the path its config.json names)")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        saved = files.read_json(os.path.join(run_dir, "config.json"))
        config = experiment.ExperimentConfig.from_saved({**saved, "data_path": args.data_path or saved["data_path"]})
        layers = initial_masks(config)
        files.write_json(os.path.join(run_dir, "initial_masks.json"), {"run_dir": run_dir, "layers": layers})
        print(f"{run_dir}: " + ", ".join(
            f"{'x'.join(map(str, layer['shape']))} {layer['kept']}/{layer['total']}" for layer in layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
