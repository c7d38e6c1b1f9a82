import warnings

import numpy as np
import pytest
import tensorflow as tf

from tff_sparsify import compat, models


def trainable_count(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


@pytest.mark.parametrize(
    "name,input_shape,classes,total,trainable",
    [
        ("fc", (28, 28, 1), 10, 118_282, 118_282),
        ("cnn", (32, 32, 3), 10, 1_609_930 + 384, 1_609_930),
        ("vgg16", (32, 32, 3), 100, 14_782_884, 14_774_436),
        # ResNet-18 (CIFAR variant): 11,173,962 trainable, plus the moving statistics of 4,800 BN channels.
        ("resnet18", (32, 32, 3), 10, 11_173_962 + 9_600, 11_173_962),
        ("resnet18", (28, 28, 1), 10, 11_173_962 - 2 * 576 + 9_600, 11_173_962 - 2 * 576),  # A 1-channel stem.
        # The small BatchNorm CNN: convolutions 288 + 9,216 + 18,432 + 36,864 + 73,728, BN 2 x 320, dense 1,290.
        ("bn_cnn", (28, 28, 1), 10, 140_458 + 640, 140_458),
    ],
)
def test_paper_models_have_the_papers_parameter_counts(name, input_shape, classes, total, trainable):
    model = models.build_model(name, input_shape, classes)
    assert model.count_params() == total
    assert trainable_count(model) == trainable


def test_resnet18_wraps_its_20_convolutions_and_classifier_for_pruning():
    wrapped = models.wrap_for_pruning(models.build_model("resnet18", (28, 28, 1), 10))
    kernels = models.prunable_weights(wrapped)
    assert len(kernels) == 21 and kernels[0].shape == (3, 3, 1, 64) and kernels[-1].shape == (512, 10)
    assert wrapped(tf.zeros([2, 28, 28, 1])).shape == (2, 10)


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="model must be one of"):
        models.build_model("resnet", (28, 28, 1), 10)


@pytest.fixture(scope="module")
def wrapped_fc():
    return models.wrap_for_pruning(models.build_model("fc", (8, 8, 1), 10))


def test_wrapping_exposes_kernels_as_prunable_and_masks_start_at_one(wrapped_fc):
    kernels = models.prunable_weights(wrapped_fc)
    assert [tuple(k.shape) for k in kernels] == [(64, 128), (128, 128), (128, 10)]
    assert all(k.name.endswith("kernel:0") for k in kernels)
    masks = models.mask_variables(wrapped_fc)
    assert [m.shape for m in masks] == [k.shape for k in kernels]
    assert all(np.all(m.numpy() == 1.0) for m in masks)
    # Wrapping keeps the parameter count of the trainable model.
    assert trainable_count(wrapped_fc) == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10


def test_model_with_nothing_to_prune_is_rejected():
    flat = tf.keras.Sequential([tf.keras.layers.Input((4,)), tf.keras.layers.Flatten()])
    with pytest.raises(ValueError, match="nothing to prune"):
        models.wrap_for_pruning(flat)


def test_initial_model_weights_have_ready_pruning_steps(wrapped_fc):
    weights = models.initial_model_weights(wrapped_fc)
    steps = [w for v, w in zip(wrapped_fc.non_trainable_weights, weights.non_trainable) if compat.is_pruning_step(v)]
    assert len(steps) == len(models.pruning_wrappers(wrapped_fc)) > 0
    assert all(int(s) == compat.READY_PRUNING_STEP for s in steps)
    np.testing.assert_array_equal(weights.trainable[0], wrapped_fc.trainable_weights[0].numpy())


def test_wrapper_runs_the_inner_layer_and_leaves_masks_and_kernels_alone():
    # FedSparsify keeps pruned kernels at zero itself (masked kernels in, masked gradients), so its
    # wrapper does no per-step work: no step counter, no schedule, no kernel re-masking.
    model = models.wrap_for_pruning(models.build_model("fc", (8, 8, 1), 10))
    mask = models.mask_variables(model)[0]
    mask.assign(np.where(np.random.default_rng(0).random(mask.shape) < 0.7, 0.0, 1.0).astype(np.float32))
    before = [w.numpy() for w in model.weights]
    x = np.random.default_rng(1).random((4, 8, 8, 1)).astype(np.float32)
    output = model(x, training=True)
    for after, value in zip(model.weights, before):
        np.testing.assert_array_equal(after.numpy(), value)  # Mask, kernel and pruning step unchanged.
    expected = x.reshape(4, -1)  # Flatten, then dense-relu, dense-relu, dense with the unmasked kernels.
    for i, wrapper in enumerate(models.pruning_wrappers(model)):
        expected = expected @ wrapper.layer.kernel.numpy() + wrapper.layer.bias.numpy()
        expected = np.maximum(expected, 0) if i < 2 else expected
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-5)


def test_tfmots_own_wrapper_masks_the_kernel_under_keras_fit():
    model = models.wrap_for_pruning(models.build_model("fc", (8, 8, 1), 10), wrapper=compat.PruneLowMagnitude)
    assert all(type(w) is compat.PruneLowMagnitude for w in models.pruning_wrappers(model))
    kernel, mask = models.prunable_weights(model)[0], models.mask_variables(model)[0]
    pruned = np.random.default_rng(0).random(mask.shape) < 0.7
    mask.assign(np.where(pruned, 0.0, 1.0).astype(np.float32))
    compat.ready_pruning_steps(model)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    x, y = np.random.default_rng(1).random((64, 8, 8, 1)), np.arange(64) % 10
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    # The schedule never rewrote the mask, and the wrapper zeroes the kernel at a forward pass.
    np.testing.assert_array_equal(mask.numpy() == 0.0, pruned)
    model(x[:1], training=False)
    assert np.all(kernel.numpy()[pruned] == 0.0)
    assert np.all(kernel.numpy()[~pruned] != 0.0)


def test_only_layers_with_prunable_weights_are_wrapped():
    wrapped = models.wrap_for_pruning(models.build_model("cnn", (32, 32, 3), 10))
    inner = [w.layer for w in models.pruning_wrappers(wrapped)]
    assert [type(layer).__name__ for layer in inner] == ["Conv2D"] * 6 + ["Dense"] * 2
    assert sum(int(np.prod(k.shape)) for k in models.prunable_weights(wrapped)) == 1_608_384  # 1,609,930 minus 1,546 biases and BN parameters
    assert trainable_count(wrapped) == 1_609_930


def test_the_configs_dataset_and_model_names_are_the_librarys():
    from tff_sparsify import config, data

    assert config.DATASETS == tuple(data.DATASETS)
    assert config.MODELS == tuple(models.MODELS)
    assert set(models.DEFAULT_MODEL) == set(config.DATASETS)


class _Subclassed(tf.keras.Model):
    def __init__(self):
        super().__init__(name="mine")
        self.dense = tf.keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


class _Scale(tf.keras.layers.Layer):  # A custom layer with a trainable weight TFMOT does not know.
    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=input_shape[-1:], initializer="ones")

    def call(self, x):
        return x * self.scale


def _inputs():
    return tf.keras.Input((4,))


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: _Subclassed(), "model 'mine' is a subclassed keras.Model, which Keras cannot clone"),
        (lambda: models.wrap_for_pruning(tf.keras.Sequential([_inputs(), tf.keras.layers.Dense(2)], name="done")),
         "model 'done' is already wrapped for pruning"),
        (lambda: tf.keras.Sequential([_inputs(), tf.keras.Sequential([tf.keras.layers.Dense(3)], name="inner"),
                                      tf.keras.layers.Dense(2)], name="outer"),
         "model 'outer' holds the nested model 'inner', whose layers would not be pruned"),
        (lambda: tf.keras.Sequential([_inputs(), _Scale(name="scale"), tf.keras.layers.Dense(2)]),
         r"layer 'scale' \(_Scale\) has trainable weights TFMOT cannot prune"),
    ],
)
def test_models_that_would_train_otherwise_than_asked_are_refused_by_name(build, message):
    with pytest.raises(ValueError, match=message):
        models.wrap_for_pruning(build())


def test_layers_tfmot_keeps_dense_on_purpose_are_accepted():
    model = tf.keras.Sequential([tf.keras.Input((6, 6, 1)), tf.keras.layers.Conv2D(2, 3),
                                 tf.keras.layers.BatchNormalization(), tf.keras.layers.Flatten(),
                                 tf.keras.layers.LayerNormalization(), tf.keras.layers.Dense(2)])
    assert len(models.pruning_wrappers(models.wrap_for_pruning(model))) == 2


def test_a_softmax_output_with_a_logits_loss_is_warned_about():
    from tff_sparsify import learning

    def softmax_model():
        return tf.keras.Sequential([_inputs(), tf.keras.layers.Dense(2, activation="softmax")], name="probs")

    spec = (tf.TensorSpec([None, 4]), tf.TensorSpec([None], tf.int64))
    with pytest.warns(UserWarning, match="model 'probs' ends in a softmax but the loss expects logits"):
        learning.ModelTask(softmax_model, spec).wrapped_keras_model()
    probabilities = learning.ModelTask(
        softmax_model, spec, loss_fn=lambda: tf.keras.losses.SparseCategoricalCrossentropy(from_logits=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probabilities.wrapped_keras_model()
    assert not [w for w in caught if "softmax" in str(w.message)]  # The matching loss: no warning.
