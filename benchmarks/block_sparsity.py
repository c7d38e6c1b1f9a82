"""Block-sparse vs unstructured pruning of the paper's FC model in TFLite: latency, throughput, size.

Trains the FashionMNIST model (784-128-128-10) for a few epochs (real Fashion-MNIST from
../shared/data when present, else random weights), prunes copies of it to the target sparsity with
`pruning.magnitude_masks` unstructured (block_size (1, 1)) and in TFLite-oriented 1x4 and 1x16 blocks
(optionally fine-tuning with the masks held), exports each dense/pruned model with
`export.to_tflite(..., sparsity=True)` as float32 and as dynamic-range int8, and times one batch with
`export.benchmark_tflite` (threads=1) in TensorFlow's interpreter ("tf") and LiteRT ("litert").

Besides the two runtimes as `export.benchmark_tflite` runs them (default delegates, i.e. XNNPACK
where it takes the model), the same timing runs with the builtin kernels only ("tf-builtin",
"litert-builtin": op resolver BUILTIN_WITHOUT_DEFAULT_DELEGATES), which shows what TFLite's sparse
FULLY_CONNECTED kernels themselves gain, whatever the delegate does with the file.

Timings run round-robin (the order reversed every other round) so that load from other processes on
the machine hits all files alike; the figure per file is the median over rounds of each round's median
latency. Also prints, per file: kernel sparsity, how the converter stored each kernel (block size of
the sparse format, "random" = unstructured sparse + DENSIFY, "dense"), file sizes, Keras test
accuracy and the TFLite/Keras argmax agreement.

    .venv/bin/python benchmarks/block_sparsity.py [--sparsity 0.9] [--rounds 7] [--repeats 200]
"""
import argparse
import json
import os
import statistics
import tempfile

import numpy as np
import tensorflow as tf

import tff_sparsify as ts
from tff_sparsify import export, models
from tff_sparsify.core import pruning

FASHION_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "fashion_mnist.npz")
BLOCKS = {"unstructured": (1, 1), "block 1x4": (1, 4), "block 1x16": (1, 16)}
QUANTIZE = ("none", "dynamic_int8")


def kernels_of(model):
    return [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]


class HoldMasks(tf.keras.callbacks.Callback):
    """Re-applies the masks after every training batch: pruned weights stay exactly zero."""

    def __init__(self, kernels, masks):
        super().__init__()
        self.kernels, self.masks = kernels, masks

    def on_train_batch_end(self, batch, logs=None):
        for kernel, mask in zip(self.kernels, self.masks):
            kernel.assign(kernel * mask)


def load_data():
    if not os.path.exists(FASHION_MNIST):
        return None
    dataset = ts.load_dataset("fashion_mnist", path=FASHION_MNIST)
    scale = lambda x: (x.astype(np.float32) / dataset.spec.max_value).reshape(-1, 28, 28, 1)  # noqa: E731
    return scale(dataset.x_train), dataset.y_train, scale(dataset.x_test), dataset.y_test


def compiled(model):
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def build_models(args, data):
    """{name: Keras model}: the dense model and one pruned copy per block option."""
    tf.keras.utils.set_random_seed(0)
    dense = compiled(models.build_model("fc", (28, 28, 1), 10))
    if data is not None:
        x_train, y_train, _, _ = data
        dense.fit(x_train, y_train, batch_size=32, epochs=args.train_epochs, verbose=0)
    else:  # Random weights of one scale for all layers: the global ranking then prunes every layer.
        rng = np.random.default_rng(0)
        for kernel in kernels_of(dense):
            kernel.assign(rng.normal(0.0, 0.05, kernel.shape).astype(np.float32))
    result = {"dense": dense}
    for name, block_size in BLOCKS.items():
        model = compiled(tf.keras.models.clone_model(dense))
        model.set_weights(dense.get_weights())
        kernels = kernels_of(model)
        masks = pruning.magnitude_masks(kernels, args.sparsity, block_size=block_size)
        for kernel, mask in zip(kernels, masks):
            kernel.assign(kernel * mask)
        if data is not None and args.finetune_epochs:
            model.fit(
                x_train, y_train, batch_size=32, epochs=args.finetune_epochs, verbose=0,
                callbacks=[HoldMasks(kernels, masks)],
            )
        result[name] = model
    return result


def stored_formats(path):
    """How the converter stored each FULLY_CONNECTED weight, and the number of DENSIFY ops."""
    interpreter = tf.lite.Interpreter(model_path=path)
    ops = interpreter._get_ops_details()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    densified = {op["outputs"][0] for op in ops if op["op_name"] == "DENSIFY"}
    sources = {op["outputs"][0]: op["inputs"][0] for op in ops if op["op_name"] == "DENSIFY"}
    formats = []
    for op in ops:
        if op["op_name"] != "FULLY_CONNECTED":
            continue
        weight = op["inputs"][1]
        parameters = tensors[sources.get(weight, weight)].get("sparsity_parameters") or {}
        if weight in densified:
            formats.append("random")
        elif parameters and len(parameters["dim_metadata"]) == 3:
            formats.append(f"1x{parameters['dim_metadata'][2]['dense_size']}")
        else:
            formats.append("random" if parameters else "dense")
    return formats, len(densified)


RUNTIMES = export.RUNTIMES + tuple(f"{runtime}-builtin" for runtime in export.RUNTIMES)


def time_once(row, runtime, args):
    """One median latency (ms) of `row`'s file in `runtime`; records which kernels ran it."""
    base, builtin = runtime.removesuffix("-builtin"), runtime.endswith("-builtin")
    result = export.benchmark_tflite(
        row["path"], args.batch_size, threads=1, warmup=args.warmup, repeats=args.repeats, runtime=base,
        delegates=not builtin,
    )
    row["kernels"][runtime] = result.kernels
    return result.median_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7, help="round-robin rounds over all files")
    parser.add_argument("--repeats", type=int, default=200, help="timed invocations per file and round")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--train-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=1, help="with masks held, after pruning")
    parser.add_argument("--out-dir", default=None, help="keep the .tflite files and results.json here")
    args = parser.parse_args()

    data = load_data()
    print(f"weights: {'trained on Fashion-MNIST' if data is not None else 'random (no Fashion-MNIST found)'}")
    keras_models = build_models(args, data)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="block_sparsity-")
    os.makedirs(out_dir, exist_ok=True)

    rows = []
    for quantize in QUANTIZE:
        for name, model in keras_models.items():
            path = os.path.join(out_dir, f"{name.replace(' ', '_')}-{quantize}.tflite")
            export.to_tflite(model, path, quantize=quantize, sparsity=True)
            formats, densify = stored_formats(path)
            row = {
                "quantize": quantize,
                "model": name,
                "path": path,
                "kernel_sparsity": float(pruning.sparsity(kernels_of(model))),
                "layer_sparsity": [float(pruning.sparsity([k])) for k in kernels_of(model)],
                "formats": formats,
                "densify_ops": densify,
                "size": export.model_size(path).__dict__,
                "times_ms": {runtime: [] for runtime in RUNTIMES},
                "kernels": {},
            }
            if data is not None:
                x_test, y_test = data[2], data[3]
                row["accuracy"] = float(model.evaluate(x_test, y_test, verbose=0)[1])
                row["tflite_agreement"] = export.check_parity(model, path, x_test[:2000]).agreement
            rows.append(row)

    jobs = [(row, runtime) for row in rows for runtime in RUNTIMES]
    for r in range(args.rounds):
        for row, runtime in jobs if r % 2 == 0 else reversed(jobs):
            row["times_ms"][runtime].append(time_once(row, runtime, args))

    for row in rows:
        row["median_ms"] = {rt: statistics.median(t) for rt, t in row["times_ms"].items()}
    dense_ms = {
        (row["quantize"], rt): row["median_ms"][rt] for row in rows if row["model"] == "dense" for rt in RUNTIMES
    }

    print(f"\nFC 784-128-128-10 pruned to {args.sparsity} (global ranking; 'layers' = per-kernel sparsity)")
    print(
        f"{'quantize':<13} {'model':<13} {'sparsity':>8} {'layers':>15}  {'stored as':<20} "
        f"{'raw KB':>7} {'gzip KB':>7} {'acc':>6} {'agree':>6}"
    )
    for row in rows:
        layers = "/".join(f"{s:.2f}" for s in row["layer_sparsity"])
        print(
            f"{row['quantize']:<13} {row['model']:<13} {row['kernel_sparsity']:>8.4f} {layers:>15}  "
            f"{','.join(row['formats']):<20} {row['size']['raw_bytes'] / 1e3:>7.1f} "
            f"{row['size']['gzip_bytes'] / 1e3:>7.1f} {row.get('accuracy', float('nan')):>6.3f} "
            f"{row.get('tflite_agreement', float('nan')):>6.3f}"
        )
    print(
        f"\nLatency of one batch of {args.batch_size}, threads=1, median over {args.rounds} round-robin "
        f"rounds of the median of {args.repeats} invocations; speedup vs the dense file of the same quantization"
    )
    print(f"{'':<27}" + "".join(f" | {rt:^25}" for rt in RUNTIMES))
    print(f"{'quantize':<13} {'model':<13}" + f" | {'ms':>7} {'items/s':>8} {'speedup':>8}" * len(RUNTIMES))
    for row in rows:
        line = f"{row['quantize']:<13} {row['model']:<13}"
        for rt in RUNTIMES:
            ms = row["median_ms"][rt]
            line += (
                f" | {ms:>6.3f}  {args.batch_size / ms * 1e3:>8.0f} "
                f"{dense_ms[(row['quantize'], rt)] / ms:>7.2f}x"
            )
        print(line)
    print("\nKernels that ran each file:")
    for row in rows:
        print(f"{row['quantize']:<13} {row['model']:<13} " + "; ".join(f"{rt}: {k}" for rt, k in row["kernels"].items()))
    print(f"files and results.json in {out_dir}")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
