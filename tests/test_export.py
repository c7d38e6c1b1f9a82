"""Export: stripped sparse Keras models, SavedModel, TFLite size and encoding, parity in two runtimes,
benchmark."""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from tff_sparsify import compat, export, models
from tff_sparsify.core import pruning

INPUT_SHAPE = (8, 8, 1)
SPARSITY = 0.8
# TF 2.14's XNNPACK leaves dynamic-range int8 FULLY_CONNECTED ops to the builtin kernels.
TF_INT8_KERNELS = "XNNPACK for 1 of 4 ops, builtin kernels for 3 FULLY_CONNECTED"


def mask_by_hand(wrapped, seed, multiply_kernels=True):
    """Sets ~80% of every mask to zero at random; returns the masks as arrays."""
    rng = np.random.default_rng(seed)
    masks = []
    for kernel, mask in zip(models.prunable_weights(wrapped), models.mask_variables(wrapped)):
        values = (rng.random(mask.shape) >= SPARSITY).astype(np.float32)
        mask.assign(values)
        if multiply_kernels:
            kernel.assign(kernel * values)
        masks.append(values)
    return masks


def kernels(model):
    return [layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")]


def inputs(n, seed=1):
    return np.random.default_rng(seed).standard_normal((n, *INPUT_SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def sparse_model():
    """The FC model on 8x8 inputs, wrapped, ~80% of its kernels pruned: (wrapped, stripped, masks)."""
    tf.keras.utils.set_random_seed(0)
    wrapped = models.wrap_for_pruning(models.build_model("fc", INPUT_SHAPE, 10))
    masks = mask_by_hand(wrapped, seed=0)
    return wrapped, export.strip_to_sparse_keras(wrapped), masks


@pytest.fixture(scope="module")
def dense_model():
    """The FC model on 8x8 inputs, no zeros."""
    tf.keras.utils.set_random_seed(1)
    return models.build_model("fc", INPUT_SHAPE, 10)


@pytest.fixture(scope="module")
def tflite_files(sparse_model, dense_model, tmp_path_factory):
    """.tflite files of the sparse model (float32 and int8, with EXPERIMENTAL_SPARSITY allowed or not)
    and of the dense model."""
    _, stripped, _ = sparse_model
    directory = tmp_path_factory.mktemp("tflite")
    return {
        "sparse": export.to_tflite(stripped, str(directory / "sparse.tflite")),
        "sparse_no_flag": export.to_tflite(stripped, str(directory / "sparse_no_flag.tflite"), sparsity=False),
        "int8": export.to_tflite(stripped, str(directory / "int8.tflite"), quantize="dynamic_int8"),
        "dense": export.to_tflite(dense_model, str(directory / "dense.tflite"), sparsity=False),
    }


def sparse_int8_file(model, path):
    """`model` converted with dynamic-range int8 and EXPERIMENTAL_SPARSITY, which LiteRT 1.4's XNNPACK
    cannot prepare (a DENSIFY of int8 weights feeds each FULLY_CONNECTED)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    path.write_bytes(converter.convert())
    return str(path)


def test_strip_keeps_exactly_the_trained_zeros_and_removes_wrappers(sparse_model):
    wrapped, stripped, masks = sparse_model
    assert not any(isinstance(layer, compat.PruneLowMagnitude) for layer in stripped.layers)
    assert not any("mask" in w.name or "threshold" in w.name or "pruning_step" in w.name for w in stripped.weights)
    assert stripped.count_params() == models.build_model("fc", INPUT_SHAPE, 10).count_params()
    for kernel, mask in zip(kernels(stripped), masks):
        np.testing.assert_array_equal(kernel == 0, mask == 0)
    assert np.mean(np.concatenate([(k == 0).ravel() for k in kernels(stripped)])) == pytest.approx(SPARSITY, abs=0.01)
    x = inputs(16)
    np.testing.assert_allclose(stripped(x).numpy(), wrapped(x, training=False).numpy(), rtol=0, atol=1e-6)


def test_strip_applies_masks_that_the_kernels_do_not_reflect_yet():
    # After the last optimizer step, kernels are nonzero at pruned positions: stripping must zero them.
    wrapped = models.wrap_for_pruning(models.build_model("fc", INPUT_SHAPE, 10))
    before = [k.numpy() for k in models.prunable_weights(wrapped)]
    masks = mask_by_hand(wrapped, seed=3, multiply_kernels=False)
    for kernel, original, mask in zip(kernels(export.strip_to_sparse_keras(wrapped)), before, masks):
        np.testing.assert_array_equal(kernel, original * mask)


def test_strip_returns_an_unwrapped_model_unchanged():
    plain = models.build_model("fc", INPUT_SHAPE, 10)
    assert export.strip_to_sparse_keras(plain) is plain


def test_saved_model_reloads_with_the_same_zeros_and_outputs(sparse_model, tmp_path):
    wrapped, stripped, _ = sparse_model
    directory = str(tmp_path / "saved_model")
    export.save_saved_model(wrapped, directory)
    export.save_saved_model(wrapped, directory)  # Replaces the previous one atomically.
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]  # No temporary directory left behind.
    reloaded = tf.keras.models.load_model(directory, compile=False)
    for actual, expected in zip(kernels(reloaded), kernels(stripped)):
        np.testing.assert_array_equal(actual, expected)
    x = inputs(16)
    np.testing.assert_allclose(reloaded(x).numpy(), stripped(x).numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("runtime", export.RUNTIMES)
def test_float32_tflite_matches_keras_in_both_runtimes(sparse_model, tflite_files, runtime):
    _, stripped, _ = sparse_model
    # 100 inputs in batches of 32: the last batch of 4 resizes the interpreter.
    parity = export.check_parity(stripped, tflite_files["sparse"], inputs(100), runtime, batch_size=32)
    assert parity.examples == 100 and parity.runtime == runtime
    assert parity.agreement == 1.0
    assert parity.max_abs_diff < 1e-4
    assert parity.kernels == "XNNPACK"  # XNNPACK took every op, DENSIFY included.


@pytest.mark.parametrize("runtime", export.RUNTIMES)
def test_int8_tflite_stays_within_quantization_error(sparse_model, tflite_files, runtime):
    # Dynamic-range int8 rounds every weight and every layer input to within about 0.4% of its
    # tensor's range (half of one step in 255); over three layers the logits move by a few percent
    # of their scale at most: 5% is the bound.
    # A logit error of at most d can only change the argmax of inputs whose top two float logits are
    # within 2d, so every other input must agree.
    _, stripped, _ = sparse_model
    x = inputs(200)
    logits = stripped(x).numpy()
    parity = export.check_parity(stripped, tflite_files["int8"], x, runtime)
    top_two = np.sort(logits, axis=-1)[:, -2:]
    safe = np.mean(top_two[:, 1] - top_two[:, 0] > 2 * parity.max_abs_diff)
    assert 0 < parity.max_abs_diff <= 0.05 * np.abs(logits).max()
    assert parity.agreement >= safe > 0.5  # Measured: agreement 0.99, error 1% of the logits' scale.
    assert parity.kernels == {"tf": TF_INT8_KERNELS, "litert": "XNNPACK"}[runtime]


def test_int8_export_runs_in_litert_default_interpreter(sparse_model, tflite_files):
    # What a user does with the file: LiteRT's interpreter with its default delegates (XNNPACK).
    _, stripped, _ = sparse_model
    interpreter = Interpreter(model_path=tflite_files["int8"])
    interpreter.allocate_tensors()
    x = inputs(1)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    logits = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert export.kernels(interpreter) == "XNNPACK"
    np.testing.assert_allclose(logits, stripped(x).numpy(), rtol=0, atol=0.05 * np.abs(logits).max())


def test_int8_sparse_encoding_is_not_written_when_litert_cannot_prepare_it(sparse_model):
    _, stripped, _ = sparse_model
    encoding = export.encode_tflite(stripped, quantize="dynamic_int8")
    assert encoding.chosen == "dense"
    assert encoding.reason.startswith(
        "the sparse encoding is not runnable: litert cannot prepare the model with its default delegates "
        "(XNNPACK): failed to delegate FULLY_CONNECTED node"
    )
    sparse, dense = encoding.sizes["sparse"].gzip_bytes, encoding.sizes["dense"].gzip_bytes
    assert encoding.reason.endswith(f"; gzip: sparse {sparse:,} bytes >= dense {dense:,}")  # Measured: 11.5 vs 10.3 kB.
    assert encoding.sizes["dense"] == export._size(encoding.content)


def test_parity_and_benchmark_fail_loudly_when_a_runtime_cannot_prepare_the_model(sparse_model, tmp_path):
    _, stripped, _ = sparse_model
    path = sparse_int8_file(stripped, tmp_path / "sparse_int8.tflite")
    message = (f"litert cannot prepare {path!r} with its default delegates (XNNPACK): "
               "failed to delegate FULLY_CONNECTED node")
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        export.check_parity(stripped, path, inputs(8), "litert")
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        export.benchmark_tflite(path, 4, warmup=0, repeats=1, runtime="litert")
    builtin = export.benchmark_tflite(path, 4, warmup=0, repeats=1, runtime="litert", delegates=False)
    assert builtin.kernels == "builtin kernels"
    # TF 2.14's XNNPACK takes neither the int8 DENSIFY nor the int8 FULLY_CONNECTED ops: no failure.
    parity = export.check_parity(stripped, path, inputs(8), "tf")
    assert parity.kernels == "XNNPACK for 1 of 7 ops, builtin kernels for 3 DENSIFY, 3 FULLY_CONNECTED"


def test_a_model_no_runtime_can_prepare_is_refused(dense_model, monkeypatch, tmp_path):
    monkeypatch.setattr(export, "_prepare_error", lambda content: "litert cannot prepare the model")
    with pytest.raises(ValueError, match="^no encoding of this model can be prepared: litert cannot prepare the model$"):
        export.to_tflite(dense_model, str(tmp_path / "m.tflite"))
    assert not os.path.exists(tmp_path / "m.tflite")


def test_smaller_encoding_prefers_dense_unless_sparse_is_smaller_gzipped():
    size = export.ModelSize
    assert export.smaller_encoding({"sparse": size(10, 99), "dense": size(40, 100)}) == "sparse"
    assert export.smaller_encoding({"sparse": size(10, 100), "dense": size(40, 100)}) == "dense"
    assert export.smaller_encoding({"sparse": size(10, 101), "dense": size(40, 100)}) == "dense"
    assert export.smaller_encoding({"dense": size(40, 100)}) == "dense"


def test_sparse_encoding_is_written_where_it_pays(dense_model, tmp_path):
    # 95% zeros in 1x4 blocks: every kernel stored block-sparse, gzip half the dense file's.
    model = tf.keras.models.clone_model(dense_model)
    model.set_weights(dense_model.get_weights())
    weights = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    for kernel, mask in zip(weights, pruning.magnitude_masks(weights, 0.95, block_size=(1, 4))):
        kernel.assign(kernel * mask)
    encoding = export.encode_tflite(model)
    sparse, dense = encoding.sizes["sparse"], encoding.sizes["dense"]
    assert encoding.chosen == "sparse" and sparse.gzip_bytes < 0.6 * dense.gzip_bytes  # Measured: 6.4 vs 12.2 kB.
    assert encoding.reason == f"gzip: sparse {sparse.gzip_bytes:,} bytes < dense {dense.gzip_bytes:,}"
    path = export.to_tflite(model, str(tmp_path / "block.tflite"))
    assert export.model_size(path) == sparse
    # XNNPACK leaves the block-sparse FULLY_CONNECTED ops to TFLite's builtin sparse kernels.
    assert export.benchmark_tflite(path, 4, warmup=0, repeats=1).kernels == TF_INT8_KERNELS


def test_sparse_encoding_is_not_written_where_it_does_not_pay(dense_model):
    # No zeros: the converter stores every kernel dense anyway, and the sparse file is a few bytes larger.
    encoding = export.encode_tflite(dense_model)
    sparse, dense = encoding.sizes["sparse"].gzip_bytes, encoding.sizes["dense"].gzip_bytes
    assert encoding.chosen == "dense" and encoding.reason == f"gzip: sparse {sparse:,} bytes >= dense {dense:,}"
    assert export.encode_tflite(dense_model, sparsity=False).sizes == {"dense": encoding.sizes["dense"]}


def test_gzip_of_a_sparse_model_is_well_below_the_dense_one(tflite_files):
    sizes = {name: export.model_size(path) for name, path in tflite_files.items()}
    dense, sparse, no_flag = sizes["dense"], sizes["sparse"], sizes["sparse_no_flag"]
    assert dense.raw_bytes == os.path.getsize(tflite_files["dense"])
    # Random float32 weights hardly compress; 80% zeros do.
    assert dense.gzip_bytes > 0.85 * dense.raw_bytes
    assert sparse.gzip_bytes < 0.4 * dense.gzip_bytes
    assert no_flag.gzip_bytes < 0.4 * dense.gzip_bytes
    # Only EXPERIMENTAL_SPARSITY shrinks the raw file: without it, zeros are stored like any weight.
    assert sparse.raw_bytes < 0.4 * dense.raw_bytes
    assert no_flag.raw_bytes == pytest.approx(dense.raw_bytes, rel=0.02)


@pytest.mark.parametrize("runtime", export.RUNTIMES)
@pytest.mark.parametrize("batch_size", [1, 7])
def test_benchmark_reports_latency_and_throughput_at_the_batch_size(tflite_files, runtime, batch_size):
    result = export.benchmark_tflite(
        tflite_files["sparse"], batch_size, threads=1, warmup=1, repeats=5, runtime=runtime
    )
    assert result.runtime == runtime and result.threads == 1 and result.repeats == 5
    assert result.batch_size == batch_size and result.input_shape == (batch_size, *INPUT_SHAPE)
    assert 0 < result.median_ms <= result.p90_ms
    assert result.items_per_second == pytest.approx(batch_size / (result.median_ms / 1e3))
    assert result.kernels == "XNNPACK"


@pytest.mark.parametrize("runtime", ["tf", "litert"])
def test_benchmark_can_run_the_builtin_kernels_only(tflite_files, runtime):
    with_delegates = export.benchmark_tflite(tflite_files["sparse"], 4, threads=1, warmup=0, repeats=2, runtime=runtime)
    builtin = export.benchmark_tflite(
        tflite_files["sparse"], 4, threads=1, warmup=0, repeats=2, runtime=runtime, delegates=False
    )
    assert with_delegates.default_delegates and not builtin.default_delegates
    assert with_delegates.kernels == "XNNPACK" and builtin.kernels == "builtin kernels"
    assert builtin.median_ms > 0


def test_benchmark_defaults_to_the_available_cpus(tflite_files):
    result = export.benchmark_tflite(tflite_files["sparse"], 4, warmup=0, repeats=2)
    assert result.threads == len(os.sched_getaffinity(0))


def test_bad_arguments_are_named(sparse_model, tflite_files, tmp_path):
    _, stripped, _ = sparse_model
    path = tflite_files["sparse"]
    with pytest.raises(ValueError, match="quantize must be one of"):
        export.to_tflite(stripped, str(tmp_path / "m.tflite"), quantize="int4")
    with pytest.raises(ValueError, match="quantize must be one of"):
        export.export_run(str(tmp_path), str(tmp_path / "out"), quantize="float16")
    with pytest.raises(ValueError, match="runtime must be one of"):
        export.check_parity(stripped, path, inputs(4), runtime="onnx")
    with pytest.raises(ValueError, match="runtime must be one of"):
        export.benchmark_tflite(path, 4, runtime="onnx")
    with pytest.raises(ValueError, match="batch_size must be"):
        export.benchmark_tflite(path, 0)
    with pytest.raises(ValueError, match="threads must be"):
        export.benchmark_tflite(path, 4, threads=0)
    with pytest.raises(ValueError, match="x must hold"):
        export.check_parity(stripped, path, inputs(0))
    assert not os.path.exists(tmp_path / "m.tflite")


def test_export_run_writes_saved_model_tflite_and_report(sparse_model, tmp_path):
    _, stripped, _ = sparse_model
    run_dir, out_dir = tmp_path / "run", tmp_path / "export"
    run_dir.mkdir()
    stripped.save(str(run_dir / "final_model.keras"))
    (run_dir / "config.json").write_text(json.dumps({"final_sparsity": SPARSITY}))

    report = export.export_run(str(run_dir), str(out_dir), test_x=inputs(50))
    assert sorted(os.listdir(out_dir)) == ["export.json", "model.tflite", "saved_model"]
    assert json.loads((out_dir / "export.json").read_text()) == report
    assert report["config"] == {"final_sparsity": SPARSITY}
    zeros = sum(int((k == 0).sum()) for k in kernels(stripped))
    assert report["kernel_sparsity"] == pytest.approx(zeros / sum(k.size for k in kernels(stripped)))
    all_zeros = sum(int((w.numpy() == 0).sum()) for w in stripped.weights)  # Untrained biases are zero.
    assert report["params"] - report["nonzero_params"] == all_zeros
    assert report["tflite_size"]["raw_bytes"] == os.path.getsize(out_dir / "model.tflite")
    assert report["encoding"]["chosen"] == "sparse"
    assert report["encoding"]["sizes"]["sparse"] == report["tflite_size"]
    assert report["encoding"]["sizes"]["dense"]["gzip_bytes"] > report["tflite_size"]["gzip_bytes"]
    for runtime in export.RUNTIMES:
        assert report["parity"][runtime]["agreement"] == 1.0
        assert report["parity"][runtime]["max_abs_diff"] < 1e-4
        assert report["parity"][runtime]["kernels"] == "XNNPACK"


def test_export_run_int8_reports_parity_of_the_file_litert_runs(sparse_model, tmp_path):
    _, stripped, _ = sparse_model
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stripped.save(str(run_dir / "final_model.keras"))
    (run_dir / "config.json").write_text("{}")
    report = export.export_run(str(run_dir), str(tmp_path / "export"), quantize="dynamic_int8", test_x=inputs(50))
    assert report["encoding"]["chosen"] == "dense"
    assert report["encoding"]["sizes"]["dense"] == report["tflite_size"]
    assert report["encoding"]["reason"].startswith("the sparse encoding is not runnable: litert cannot prepare")
    assert report["parity"]["litert"]["kernels"] == "XNNPACK" and report["parity"]["tf"]["kernels"] == TF_INT8_KERNELS
    assert report["parity"]["litert"]["agreement"] >= 0.9
