"""The FedSparsify paper's Keras models (section 5, appendix B) and their TFMOT pruning wrappers.

- `fc`: FashionMNIST, 784-128-128-10 fully connected with ReLU (118,282 parameters).
- `cnn`: CIFAR-10, six 3x3 convolutions, dense 512, dropout 0.2 (1,609,930 trainable parameters).
- `vgg16`: CIFAR-100, VGG-16 for 32x32 inputs: 13 3x3 convolutions with batch norm, one dense
  layer 512->100 (14,782,884 parameters, 14,774,436 trainable).
- `resnet18`: FedTiny's model (Huang et al., 2023), ResNet-18 for 32x32 inputs (He et al., 2016, as
  the CIFAR variant): a 3x3 stem, no max-pool, four stages of two basic blocks (64, 128, 256, 512
  filters), batch norm, global average pooling (11,173,962 trainable parameters for CIFAR-10).

All models output logits. `wrap_for_pruning` wraps a model with TFMOT's `prune_low_magnitude` so that
its masks are controlled by FedSparsify (never by TFMOT's schedule) and it trains inside TFF.
"""
from __future__ import annotations

import math
from typing import Callable

import tensorflow as tf

from tff_sparsify import compat

layers = tf.keras.layers


def fashion_mnist_fc(input_shape=(28, 28, 1), num_classes: int = 10) -> tf.keras.Model:
    """The paper's FashionMNIST model: flatten, dense 128, dense 128, dense `num_classes`."""
    return tf.keras.Sequential(
        [
            layers.Input(input_shape),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(128, activation="relu"),
            layers.Dense(num_classes),
        ],
        name="fc",
    )


def cifar10_cnn(input_shape=(32, 32, 3), num_classes: int = 10) -> tf.keras.Model:
    """The paper's CIFAR-10 CNN: (conv64 x2, pool, BN), (conv128 x2, pool, BN), (conv128 x2, pool)."""

    def conv(filters):
        return layers.Conv2D(filters, 3, padding="same", activation="relu")

    return tf.keras.Sequential(
        [
            layers.Input(input_shape),
            conv(64), conv(64), layers.MaxPooling2D(), layers.BatchNormalization(),
            conv(128), conv(128), layers.MaxPooling2D(), layers.BatchNormalization(),
            conv(128), conv(128), layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(num_classes),
        ],
        name="cnn",
    )


VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def cifar100_vgg16(input_shape=(32, 32, 3), num_classes: int = 100) -> tf.keras.Model:
    """VGG-16 for CIFAR: five blocks of 3x3 conv + BN + ReLU, each closed by a 2x2 max-pool."""
    stack = [layers.Input(input_shape)]
    for block in VGG16_BLOCKS:
        for filters in block:
            stack += [
                layers.Conv2D(filters, 3, padding="same"),
                layers.BatchNormalization(),
                layers.Activation("relu"),
            ]
        stack.append(layers.MaxPooling2D())
    stack += [layers.Flatten(), layers.Dense(num_classes)]
    return tf.keras.Sequential(stack, name="vgg16")


RESNET18_STAGES = (64, 128, 256, 512)


def resnet18(input_shape=(32, 32, 3), num_classes: int = 10) -> tf.keras.Model:
    """ResNet-18 for small images: conv3x3(64) + BN + ReLU, four stages of two basic blocks (the first
    block of stages 2-4 halves the resolution, with a 1x1 conv + BN shortcut), global average pooling,
    dense `num_classes`. Convolutions have no bias (the batch norm after each has one). Layers are
    named by stage (`stem`, `stage<n>_block<b>_...`, `classifier`): FedTiny adjusts stage by stage."""

    def conv_bn(x, filters, kernel_size, strides, name):
        x = layers.Conv2D(filters, kernel_size, strides, padding="same", use_bias=False, name=name)(x)
        return layers.BatchNormalization(name=f"{name}_bn")(x)

    inputs = layers.Input(input_shape)
    x = layers.ReLU()(conv_bn(inputs, RESNET18_STAGES[0], 3, 1, "stem"))
    for stage, filters in enumerate(RESNET18_STAGES, start=1):
        for block in (1, 2):
            name = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            shortcut = conv_bn(x, filters, 1, strides, f"{name}_shortcut") if strides == 2 else x
            y = layers.ReLU()(conv_bn(x, filters, 3, strides, f"{name}_conv1"))
            x = layers.ReLU()(layers.Add()([conv_bn(y, filters, 3, 1, f"{name}_conv2"), shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, layers.Dense(num_classes, name="classifier")(x), name="resnet18")


BN_CNN_WIDTHS = ((32, 32), (64, 64), (128,))


def bn_cnn(input_shape=(28, 28, 1), num_classes: int = 10) -> tf.keras.Model:
    """A small BatchNorm CNN (FedTiny's CPU-scaled comparison): 3x3 conv + BN + ReLU blocks of
    32, 32 | 64, 64 | 128 filters, a 2x2 max-pool between blocks, global average pooling, dense
    `num_classes`; no biases in the convolutions (the batch norm after each has one). Every layer is
    normalized, as in ResNet-18, so signal still flows at about 1% density."""
    stack = [layers.Input(input_shape)]
    for block, widths in enumerate(BN_CNN_WIDTHS):
        if block:
            stack.append(layers.MaxPooling2D())
        for filters in widths:
            stack += [layers.Conv2D(filters, 3, padding="same", use_bias=False), layers.BatchNormalization(),
                      layers.ReLU()]
    stack += [layers.GlobalAveragePooling2D(), layers.Dense(num_classes)]
    return tf.keras.Sequential(stack, name="bn_cnn")


MODELS: dict[str, Callable[..., tf.keras.Model]] = {
    "fc": fashion_mnist_fc,
    "cnn": cifar10_cnn,
    "vgg16": cifar100_vgg16,
    "resnet18": resnet18,
    "bn_cnn": bn_cnn,
}
# The paper's model for each dataset.
DEFAULT_MODEL = {"digits": "fc", "fashion_mnist": "fc", "cifar10": "cnn", "cifar100": "vgg16"}


def default_loss() -> tf.keras.losses.Loss:
    """The loss for these models' logits: sparse categorical cross-entropy."""
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build_model(name: str, input_shape, num_classes: int) -> tf.keras.Model:
    """Builds the model `name` (one of `MODELS`) for the given input shape and number of classes."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](input_shape=tuple(input_shape), num_classes=num_classes)


def wrap_for_pruning(
    model: tf.keras.Model, wrapper: type = compat.FedSparsifyPruneLowMagnitude
) -> tf.keras.Model:
    """Wraps each layer with prunable weights in TFMOT's pruning wrapper, by default in its lean
    FedSparsify form (`compat.FedSparsifyPruneLowMagnitude`: no per-step mask bookkeeping;
    `compat.PruneLowMagnitude` is TFMOT's own, which then needs `initial_model_weights` to train).

    Masks are under FedSparsify's control (never TFMOT's schedule). Layers without prunable weights
    (pooling, batch norm, dropout, ...) stay unwrapped.
    As in TFMOT's guide, this clones the model, so the wrapped layers' weights are freshly initialized.
    Raises ValueError, naming the model or layer, for what would silently train otherwise than asked
    (`check_prunable`).
    """
    check_prunable(model)
    schedule = compat.ServerControlledSchedule()

    def wrap(layer):
        if compat.has_prunable_weights(layer):
            return wrapper(layer, pruning_schedule=schedule)
        return layer.__class__.from_config(layer.get_config())

    return tf.keras.models.clone_model(model, clone_function=wrap)


def check_prunable(model: tf.keras.Model) -> None:
    """A ValueError for a model `wrap_for_pruning` cannot prune as a whole: subclassed (Keras cannot
    clone it), already wrapped by TFMOT, holding a nested model (its layers would stay dense), a
    layer with trainable weights TFMOT does not know how to prune (they would stay dense), or nothing
    to prune at all."""
    if not isinstance(model, tf.keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise ValueError(f"model {model.name!r} is a subclassed keras.Model, which Keras cannot clone for "
                         "TFMOT's pruning wrappers; build it with keras.Sequential or the functional API")
    for layer in model.layers:
        if isinstance(layer, compat.PruneLowMagnitude):
            raise ValueError(f"model {model.name!r} is already wrapped for pruning (layer {layer.name!r}); "
                             "give the plain Keras model: tff_sparsify wraps it and controls the masks")
        if isinstance(layer, tf.keras.Model):
            raise ValueError(f"model {model.name!r} holds the nested model {layer.name!r}, whose layers would "
                             "not be pruned; build one flat model of layers (e.g. add its layers directly)")
        if layer.trainable_weights and not compat.has_prunable_weights(layer) and not compat.prunes_nothing(layer):
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) has trainable weights TFMOT cannot prune, "
                "so they would stay dense; make it a tfmot.sparsity.keras.PrunableLayer "
                "(get_prunable_weights) or build it from Dense/Conv layers")
    if not any(compat.has_prunable_weights(layer) for layer in model.layers):
        raise ValueError(f"model {model.name!r} has nothing to prune (no Dense or Conv kernels)")


def pruning_wrappers(model: tf.keras.Model) -> list:
    return [layer for layer in model.layers if isinstance(layer, compat.PruneLowMagnitude)]


def prunable_weights(model: tf.keras.Model) -> list[tf.Variable]:
    """The kernels TFMOT prunes (Dense and Conv kernels; not biases or batch norm), in layer order."""
    return [weight for w in pruning_wrappers(model) for weight, _, _ in w.pruning_vars]


def mask_variables(model: tf.keras.Model) -> list[tf.Variable]:
    """The TFMOT masks matching `prunable_weights` one to one."""
    return [mask for w in pruning_wrappers(model) for _, mask, _ in w.pruning_vars]


def batch_norm_statistics(model: tf.keras.Model) -> list[tf.Variable]:
    """The BatchNorm moving means and variances, in `model.non_trainable_weights` order.

    Non-trainable, so TFF's stock client work never sends them; the learning processes federate
    them (their example-weighted mean over the clients, as the authors' FedAvg over all weights).
    """
    statistics = {
        v.ref()
        for layer in model.submodules
        if isinstance(layer, layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    }
    return [v for v in model.non_trainable_weights if v.ref() in statistics]


def activation_bytes(model: tf.keras.Model, batch_size: int) -> int:
    """Float32 bytes of the outputs of every layer of `model` for one batch of `batch_size`: what
    training keeps for the backward pass (an upper bound: in-place activations share buffers)."""
    outputs = [layer.output_shape for layer in model.layers if not isinstance(layer, tf.keras.layers.InputLayer)]
    return 4 * batch_size * sum(math.prod(shape[1:]) for shape in outputs)


def initial_model_weights(model: tf.keras.Model):
    """`tff.learning.models.ModelWeights` of a wrapped model, ready to train inside TFF.

    Use it as a learning process's initial weights, or after `initialize()` with
    `process.set_model_weights(state, initial_model_weights(model))`.
    """
    return compat.with_ready_pruning_steps(model)
