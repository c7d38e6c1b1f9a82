"""Exporting sparse models: stripped Keras models, SavedModels, TFLite files, their size and speed.

The FedSparsify paper (appendix C, tables 1-2) measures a sparse model by the size of its exported
file after gzip ("Model Size (MBs)": 0.434 MB for the dense FashionMNIST model, 0.056 MB at 90%
sparsity) and by its inference latency and throughput. This module:

- removes TFMOT's pruning wrappers while keeping every pruned weight exactly zero
  (`strip_to_sparse_keras`; TFMOT's `strip_pruning` alone does not apply the masks);
- writes a SavedModel (`save_saved_model`) and a .tflite file (`to_tflite`, `encode_tflite`), float32
  or with dynamic-range int8 weights, in the smaller (gzip) of two encodings that both runtimes can
  prepare: "sparse" (TFLite's `EXPERIMENTAL_SPARSITY` optimization) or "dense";
- measures the file (`model_size`: raw and gzip bytes), checks that the .tflite computes what the Keras
  model computes (`check_parity`) and times it (`benchmark_tflite`), in TensorFlow's TFLite
  interpreter ("tf") or in the standalone LiteRT runtime ("litert", package `ai-edge-litert`), with
  their default delegates (XNNPACK) as a phone runs it, saying which kernels ran each op;
- does all of it for a finished run directory (`export_run`).

What `EXPERIMENTAL_SPARSITY` does (TF 2.14 converter, x86): sparse kernels are stored compressed. A
kernel whose zeros fill enough 1x4 blocks (1x16 for int8) feeds TFLite's builtin sparse
FULLY_CONNECTED kernel directly (XNNPACK leaves that op to the builtin kernels); any other gets a
DENSIFY op and runs dense. On the paper's FC model at 90% sparsity the raw file shrinks 4.9x but
inference is no faster. LiteRT 1.4's XNNPACK takes a DENSIFY of int8 weights, then fails to prepare the
dynamic-range FULLY_CONNECTED fed by it ("failed to delegate FULLY_CONNECTED node"), whatever the batch
size: such a sparse int8 encoding is not written (on the FC models measured its gzip was larger than
the dense encoding's anyway).

Every file is written atomically: to a temporary path beside it, then renamed.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import gzip
import logging
import os
import time
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tff_sparsify import checks, files, layout, models
from tff_sparsify.core import pruning
from tff_sparsify.layout import QUANTIZE_MODES, RUNTIMES, TFLITE_FILE

GZIP_LEVEL = 9
ENCODINGS = ("sparse", "dense")  # TFLite's EXPERIMENTAL_SPARSITY (zeros not stored), or not.
XNNPACK = "XNNPACK"  # The default delegate of both runtimes.
BUILTIN = "builtin kernels"

SAVED_MODEL_DIR = "saved_model"
REPORT_FILE = "export.json"


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """Bytes of a model file, raw and gzip-compressed (level 9: the paper's model size)."""

    raw_bytes: int
    gzip_bytes: int


@dataclasses.dataclass(frozen=True)
class Parity:
    """How closely a .tflite file reproduces its Keras model on `examples` inputs."""

    runtime: str
    examples: int
    agreement: float  # Fraction of inputs with the same argmax.
    max_abs_diff: float  # Largest absolute difference of any output logit.
    kernels: str  # Which kernels ran it with the default delegates (`kernels`).


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """Latency of one `invoke()` on a batch, and the throughput it implies."""

    runtime: str
    batch_size: int
    input_shape: tuple[int, ...]  # As the interpreter reports it after resizing.
    threads: int
    repeats: int
    median_ms: float
    p90_ms: float
    items_per_second: float  # batch_size / median latency.
    default_delegates: bool  # False: builtin kernels only, as asked (`delegates=False`).
    kernels: str  # Which kernels ran it (`kernels`).


@dataclasses.dataclass(frozen=True)
class Encoding:
    """A converted model in the encoding chosen by `encode_tflite`, the sizes of every encoding tried,
    and why this one."""

    content: bytes
    chosen: str  # One of ENCODINGS.
    sizes: dict[str, ModelSize]  # Every encoding converted, by name.
    reason: str


def strip_to_sparse_keras(model: tf.keras.Model) -> tf.keras.Model:
    """The model without TFMOT wrappers, its pruned kernels exactly zero.

    For a wrapped model (`models.wrap_for_pruning`) the masks are first applied to the kernels in
    place, as the wrapper's own forward pass does; the result shares the kernels with `model`.
    An unwrapped model is returned unchanged.
    """
    if not models.pruning_wrappers(model):
        return model
    kernels, masks = models.prunable_weights(model), models.mask_variables(model)
    for kernel, masked in zip(kernels, pruning.apply_masks(kernels, masks)):
        kernel.assign(masked)
    return tfmot.sparsity.keras.strip_pruning(model)


def save_saved_model(model: tf.keras.Model, directory: str) -> str:
    """Writes `model` (wrappers stripped, pruned weights zero) as a SavedModel; returns `directory`."""
    stripped = strip_to_sparse_keras(model)
    with _tf_logger_at(logging.ERROR):  # Not "Compiled the loaded model, but the compiled metrics ..." each time.
        files.atomic_directory(directory, lambda tmp: stripped.save(tmp, save_format="tf"))
    return directory


def to_tflite(model: tf.keras.Model, path: str, *, quantize: str = "none", sparsity: bool = True) -> str:
    """Writes `model` (wrapped or not) as a .tflite file at `path` (`encode_tflite`); returns `path`."""
    files.write_bytes(path, encode_tflite(model, quantize=quantize, sparsity=sparsity).content)
    return path


def encode_tflite(model: tf.keras.Model, *, quantize: str = "none", sparsity: bool = True) -> Encoding:
    """Converts `model` (wrapped or not) to a .tflite flatbuffer in the encoding worth writing.

    Args:
      quantize: "none" (float32) or "dynamic_int8" (int8 weights, float activations quantized on
        the fly: `tf.lite.Optimize.DEFAULT` without a representative dataset).
      sparsity: also convert with `tf.lite.Optimize.EXPERIMENTAL_SPARSITY` (zeros not stored). That
        "sparse" encoding is chosen if both runtimes prepare it with their default delegates and it is
        smaller gzipped than the "dense" one (`smaller_encoding`).

    The input keeps a dynamic batch dimension: interpreters are resized to any batch size. A
    ValueError if no encoding can be prepared.
    """
    checks.choice("quantize", quantize, QUANTIZE_MODES)
    stripped = strip_to_sparse_keras(model)
    names = ENCODINGS if sparsity else ("dense",)
    contents = {name: _convert(stripped, quantize, name == "sparse") for name in names}
    sizes = {name: _size(content) for name, content in contents.items()}
    failures = {name: error for name, content in contents.items() if (error := _prepare_error(content))}
    if len(failures) == len(contents):
        raise ValueError(f"no encoding of this model can be prepared: {failures['dense']}")
    chosen = smaller_encoding({name: size for name, size in sizes.items() if name not in failures})
    if not sparsity:
        return Encoding(contents[chosen], chosen, sizes, "sparsity optimization off")
    sparse, dense = sizes["sparse"].gzip_bytes, sizes["dense"].gzip_bytes
    reasons = [f"the {name} encoding is not runnable: {error}" for name, error in failures.items()]
    reasons.append(f"gzip: sparse {sparse:,} bytes {'<' if sparse < dense else '>='} dense {dense:,}")
    return Encoding(contents[chosen], chosen, sizes, "; ".join(reasons))


def smaller_encoding(sizes: dict[str, ModelSize]) -> str:
    """The encoding with the fewest gzip bytes; "dense" on a tie (the sparse one does not pay)."""
    return min(sizes, key=lambda name: (sizes[name].gzip_bytes, name == "sparse"))


def _convert(model: tf.keras.Model, quantize: str, sparse: bool) -> bytes:
    """The TFLite flatbuffer of an unwrapped `model`."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = [tf.lite.Optimize.DEFAULT] if quantize == "dynamic_int8" else []
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    return converter.convert()


def _prepare_error(content: bytes) -> str | None:
    """Why a runtime cannot prepare the flatbuffer `content` with its default delegates, or None."""
    for runtime in RUNTIMES:
        try:
            _interpreter(content, runtime, 1)
        except ValueError as error:
            return str(error)
    return None


def model_size(path: str) -> ModelSize:
    """Raw and gzip (level 9) byte counts of the file at `path`."""
    with open(path, "rb") as f:
        return _size(f.read())


def _size(content: bytes) -> ModelSize:
    return ModelSize(len(content), len(gzip.compress(content, compresslevel=GZIP_LEVEL, mtime=0)))


def check_parity(
    keras_model: tf.keras.Model,
    tflite_path: str,
    x: np.ndarray,
    runtime: str = "tf",
    *,
    batch_size: int = 128,
) -> Parity:
    """Runs the .tflite file and `keras_model` on the inputs `x` (in batches); compares the outputs.

    The runtime uses its default delegates (XNNPACK), as on a phone: a ValueError if it cannot
    prepare the model with them.
    """
    checks.choice("runtime", runtime, RUNTIMES)
    x = np.asarray(x, np.float32)
    if len(x) == 0:
        raise ValueError("x must hold at least one input, got none")
    checks.integer("batch_size", batch_size)
    expected = keras_model.predict(x, batch_size=batch_size, verbose=0)
    interpreter = _interpreter(tflite_path, runtime, min(batch_size, len(x)))
    actual = np.concatenate(
        [_invoke(interpreter, x[start : start + batch_size]) for start in range(0, len(x), batch_size)]
    )
    return Parity(
        runtime=runtime,
        examples=len(x),
        agreement=float(np.mean(actual.argmax(-1) == expected.argmax(-1))),
        max_abs_diff=float(np.max(np.abs(actual - expected))),
        kernels=kernels(interpreter),
    )


def benchmark_tflite(
    path: str,
    batch_size: int,
    *,
    threads: int | None = None,
    warmup: int = 5,
    repeats: int = 50,
    runtime: str = "tf",
    seed: int = 0,
    delegates: bool = True,
) -> Benchmark:
    """Times `repeats` invocations of the .tflite file on one batch of random inputs, after `warmup`.

    `threads` defaults to the number of CPUs this process may use. Only `invoke()` is timed.
    `delegates=False` runs TFLite's builtin kernels only (no XNNPACK), e.g. to see what its sparse
    kernels gain by themselves; with them, a ValueError if the runtime cannot prepare the model.
    """
    checks.choice("runtime", runtime, RUNTIMES)
    for name, value, low in (("batch_size", batch_size, 1), ("warmup", warmup, 0), ("repeats", repeats, 1)):
        checks.integer(name, value, low)
    threads = len(os.sched_getaffinity(0)) if threads is None else checks.integer("threads", threads)

    interpreter = _interpreter(path, runtime, batch_size, threads, delegates)
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.random.default_rng(seed).random(detail["shape"], dtype=np.float32))
    for _ in range(warmup):
        interpreter.invoke()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        interpreter.invoke()
        seconds.append(time.perf_counter() - started)
    median = float(np.median(seconds))
    return Benchmark(
        runtime=runtime,
        batch_size=batch_size,
        input_shape=tuple(int(d) for d in detail["shape"]),
        threads=threads,
        repeats=repeats,
        median_ms=median * 1e3,
        p90_ms=float(np.percentile(seconds, 90)) * 1e3,
        items_per_second=batch_size / median,
        default_delegates=delegates,
        kernels=kernels(interpreter),
    )


def export_run(
    run_dir: str,
    out_dir: str,
    *,
    quantize: str = "none",
    sparsity: bool = True,
    test_x: np.ndarray | None = None,
) -> dict[str, Any]:
    """Exports a run's `final_model.keras` to `out_dir`: SavedModel, .tflite and `export.json`.

    The report (returned and written) holds the size of the .tflite written, its encoding (chosen,
    why, and the sizes of every encoding tried: `encode_tflite`), the sparsity of the kernels and of
    all parameters, the run's config, and, given `test_x`, the parity of the .tflite in both runtimes.
    """
    checks.choice("quantize", quantize, QUANTIZE_MODES)
    model = tf.keras.models.load_model(os.path.join(run_dir, layout.FINAL_MODEL_FILE), compile=False)
    os.makedirs(out_dir, exist_ok=True)
    saved_model = save_saved_model(model, os.path.join(out_dir, SAVED_MODEL_DIR))
    encoding = encode_tflite(model, quantize=quantize, sparsity=sparsity)
    tflite = os.path.join(out_dir, TFLITE_FILE)
    files.write_bytes(tflite, encoding.content)
    report = {
        "run_dir": os.path.abspath(run_dir),
        "config": files.read_json(os.path.join(run_dir, layout.CONFIG_FILE)),
        "quantize": quantize,
        "sparsity_optimization": sparsity,
        "saved_model": os.path.abspath(saved_model),
        "tflite": os.path.abspath(tflite),
        "tflite_size": dataclasses.asdict(model_size(tflite)),
        "encoding": {
            "chosen": encoding.chosen,
            "reason": encoding.reason,
            "sizes": {name: dataclasses.asdict(size) for name, size in encoding.sizes.items()},
        },
        **weight_sparsity(model),
    }
    if test_x is not None:
        report["parity"] = {
            runtime: dataclasses.asdict(check_parity(model, tflite, test_x, runtime)) for runtime in RUNTIMES
        }
    files.write_json(os.path.join(out_dir, REPORT_FILE), report)
    return report


def weight_sparsity(model: tf.keras.Model) -> dict[str, float | int]:
    """Zeros among the kernels of Dense and Conv layers (the prunable weights) and all parameters."""
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    return {
        "kernel_sparsity": float(pruning.sparsity(kernels)),
        "param_sparsity": float(pruning.sparsity(model.weights)),
        "nonzero_params": int(pruning.count_nonzero(model.weights)),
        "params": int(model.count_params()),
    }


def _runtime(runtime: str):
    """The interpreter class and op resolver types of TensorFlow's `tf.lite` or of LiteRT."""
    if runtime == "tf":
        return tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    from ai_edge_litert import interpreter  # Imported here: only this runtime needs it.

    return interpreter.Interpreter, interpreter.OpResolverType


def _interpreter(model: str | bytes, runtime: str, batch_size: int, threads: int | None = None,
                 delegates: bool = True):
    """An interpreter for `model` (a path, or flatbuffer bytes) with its input resized to `batch_size`
    and tensors allocated, with the runtime's default delegates (XNNPACK) or, `delegates=False`, its
    builtin kernels only. A ValueError if the runtime cannot prepare the model."""
    interpreter_class, op_resolver_type = _runtime(runtime)
    source = {"model_path": model} if isinstance(model, str) else {"model_content": model}
    resolver = op_resolver_type.AUTO if delegates else op_resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = interpreter_class(**source, num_threads=threads, experimental_op_resolver_type=resolver)
        return _allocated(interpreter, batch_size)
    except RuntimeError as error:
        name = repr(model) if isinstance(model, str) else "the model"
        using = f"its default delegates ({XNNPACK})" if delegates else BUILTIN
        raise ValueError(f"{runtime} cannot prepare {name} with {using}: {str(error).splitlines()[0]}") from None


def kernels(interpreter) -> str:
    """Which kernels run the ops of an allocated interpreter: XNNPACK, the builtin kernels, or
    "XNNPACK for 1 of 4 ops, builtin kernels for 3 FULLY_CONNECTED"."""
    ops = interpreter._get_ops_details()  # The model's ops, then one DELEGATE op per delegated partition.
    producers = {tensor: op for op in ops if op["op_name"] != "DELEGATE" for tensor in op["outputs"]}
    delegated = set()
    for partition in (op for op in ops if op["op_name"] == "DELEGATE"):
        # The partition's ops: those that make its outputs, back to its inputs.
        inputs, pending = set(partition["inputs"]), list(partition["outputs"])
        while pending:
            op = producers.get(pending.pop())
            if op is not None and op["index"] not in delegated:
                delegated.add(op["index"])
                pending.extend(tensor for tensor in op["inputs"] if tensor not in inputs)
    model_ops = [op for op in ops if op["op_name"] != "DELEGATE"]
    builtin = collections.Counter(op["op_name"] for op in model_ops if op["index"] not in delegated)
    if not builtin:
        return XNNPACK
    if not delegated:
        return BUILTIN
    names = ", ".join(f"{count} {name}" for name, count in sorted(builtin.items()))
    return f"{XNNPACK} for {len(delegated)} of {len(model_ops)} ops, {BUILTIN} for {names}"


def _allocated(interpreter, batch_size: int):
    """`interpreter` with its input resized to `batch_size` items and its tensors allocated."""
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [batch_size, *detail["shape"][1:]])
    interpreter.allocate_tensors()
    return interpreter


def _invoke(interpreter, batch: np.ndarray) -> np.ndarray:
    """The model's output on `batch`, resizing the interpreter's input when the batch size changes."""
    if interpreter.get_input_details()[0]["shape"][0] != len(batch):
        _allocated(interpreter, len(batch))
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@contextlib.contextmanager
def _tf_logger_at(level: int):
    """TensorFlow's Python logger at `level` for the `with` block."""
    logger = tf.get_logger()
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
