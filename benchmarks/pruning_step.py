"""Time of the server's pruning step on VGG-16 (CIFAR-100): `pruning.magnitude_masks` vs a full sort.

On the 14 prunable kernels of the TFMOT-wrapped VGG-16 (14.76 M weights), with masks from a previous
round (pruned to `--previous` x the target; kernels perturbed and masked, as after masked training),
times in a `tf.function` taking the target as a float64 scalar tensor, as the server's finalizer does:
  - `pruning.magnitude_masks(kernels, s, previous_masks)` (bisection over int32 bit patterns),
  - the baseline: a global threshold from `tf.sort` of all |w| concatenated (previous masks at -1).
Prints the median and max wall time of `--repeats` calls after `--warmup` (and the median CPU time of
all threads, less sensitive to other load), the ratio of the medians, and checks that the realized
sparsity is exactly floor(s * N + 0.5) / N. Goal: under 0.5 s.

    .venv/bin/python benchmarks/pruning_step.py [--sparsities 0.5 0.9 0.99] [--repeats 10] [--warmup 2]
"""
import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

from tff_sparsify import compat, models
from tff_sparsify.core import pruning

GOAL_SECONDS = 0.5


def sort_threshold_masks(kernels, sparsity, masks):
    """The baseline: prune every |w| up to the k-th smallest of a full sort (ties: all pruned)."""
    keys = tf.concat([tf.reshape(tf.abs(w), [-1]) for w in kernels], axis=0)
    kept = tf.concat([tf.reshape(m, [-1]) for m in masks], axis=0) != 0.0
    keys = tf.where(kept, keys, -1.0)
    k = tf.cast(tf.floor(sparsity * tf.cast(tf.size(keys), tf.float64) + 0.5), tf.int32)
    threshold = tf.sort(keys)[tf.maximum(k - 1, 0)]
    flat = tf.cast((keys > threshold) | (k == 0), tf.float32)
    return [tf.reshape(m, tf.shape(w)) for m, w in zip(tf.split(flat, [tf.size(w) for w in kernels]), kernels)]


def seconds_per_call(fn, args, repeats, warmup):
    """Median and max wall seconds, and median CPU seconds (all threads) of `fn(*args)`."""
    wall, cpu = [], []
    for i in range(warmup + repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        fn(*args)
        if i >= warmup:
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
    return statistics.median(wall), max(wall), statistics.median(cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.9, 0.99])
    parser.add_argument("--previous", type=float, default=0.9, help="previous masks' sparsity / target")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    tf.keras.utils.set_random_seed(1990)
    model = models.wrap_for_pruning(models.build_model("vgg16", (32, 32, 3), 100))
    initial = [tf.convert_to_tensor(w) for w in models.prunable_weights(model)]
    n = sum(int(tf.size(w)) for w in initial)
    specs = [tf.TensorSpec(w.shape, tf.float32) for w in initial]
    signature = (specs, tf.TensorSpec([], tf.float64), specs)
    candidates = {
        "magnitude_masks": tf.function(pruning.magnitude_masks, input_signature=signature),
        "tf.sort threshold": tf.function(sort_threshold_masks, input_signature=signature),
    }
    print(f"VGG-16 (CIFAR-100): {len(initial)} prunable kernels, N = {n:,} weights; "
          f"previous masks at {args.previous} x s; median / max of {args.repeats} calls after {args.warmup}")

    for s in args.sparsities:
        previous = pruning.magnitude_masks(initial, args.previous * s)
        kernels = pruning.apply_masks([w + tf.random.normal(w.shape, stddev=1e-3) for w in initial], previous)
        call_args = (kernels, tf.constant(s, tf.float64), previous)
        seconds = {name: seconds_per_call(fn, call_args, args.repeats, args.warmup) for name, fn in candidates.items()}
        zeros = n - int(pruning.count_nonzero(candidates["magnitude_masks"](*call_args)))
        expected = int(np.floor(s * n + 0.5))
        fast, sort = seconds["magnitude_masks"][0], seconds["tf.sort threshold"][0]
        print(f"s = {s}: zeros {zeros:,} / {n:,}, floor(s*N+0.5) = {expected:,}: "
              f"{'exact' if zeros == expected else 'MISMATCH'}")
        for name, (median, worst, cpu) in seconds.items():
            print(f"  {name:18s} median {median:6.3f} s   max {worst:6.3f} s   (CPU median {cpu:6.3f} s)")
        print(f"  sort / magnitude_masks: x{sort / fast:.1f}   goal < {GOAL_SECONDS} s: "
              f"{'met' if fast < GOAL_SECONDS else 'NOT met'}")
    compat.release_tff_runtime()


if __name__ == "__main__":
    main()
