"""`prune(model)`: bring your own Keras model (tfmot's `prune_low_magnitude`, for DynHP).

Converts a built Keras model that is a chain of layers with a registered gated
form (:func:`keras_dynhp.layers.register_gated_layer`; today `keras.layers.Dense`
-> :class:`~keras_dynhp.layers.L0Dense`) into a
:class:`~keras_dynhp.models.DynHPModel` that trains with `sp`, `hp` and `dynhp`.
Weights and biases are carried over; each unit gets a hard-concrete gate.
:func:`keras_dynhp.strip` gives back a plain Keras model afterwards.

Supported: a `keras.Sequential` or functional model with one input and one
output, made of registered layers in a chain (each one's output feeding only
the next): `Dense` layers on `(batch, features)` inputs, or `Conv2D` layers on
images `(batch, height, width, channels)` followed by `Dense` layers, with
per-channel layers between them: weight-free ones (pooling, `Flatten`,
`Dropout`, activations, `ZeroPadding2D`:
:data:`keras_dynhp.models.CONNECTOR_LAYERS`) and `BatchNormalization` and
`DepthwiseConv2D`, which keep their weights and lose the channels their
producer loses (:mod:`keras_dynhp.layers.channels`). A MobileNet (v1) is such
a chain. The first convolution's image channels get no gates. Anything else
(a branch, a residual `Add`) is a clear `ValueError` naming the layer.
"""

import warnings

import keras

from keras_dynhp.layers import channels as channel_layers
from keras_dynhp.layers.base import registered_gated_layers
from keras_dynhp.penalty import DEFAULT_PENALTY, resolve_settings


def _chain_layers(model):
    """The model's layers in order, without InputLayers; a clear error if not a plain chain."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"`prune` takes a Keras model; received {type(model).__name__}.")
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            "Build the model first (give it an input shape, e.g. keras.Input((784,)) as its first "
            "layer, or call it on a batch) so that the width of its input is known.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"`prune` supports models with one input and one output; this one has {len(model.inputs)} "
            f"and {len(model.outputs)}.")
    shape = tuple(model.inputs[0].shape)
    if len(shape) not in (2, 4) or any(d is None for d in shape[1:]):
        raise ValueError(
            f"`prune` supports inputs of shape (batch, features) or images (batch, height, width, "
            f"channels) of known size; this model takes {shape}.")
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not isinstance(model, keras.Sequential):
        for layer in layers:  # a chain: every layer called once, on the previous layer's output
            if len(layer._inbound_nodes) != 1:
                raise ValueError(f"Layer '{layer.name}' is used more than once: `prune` supports chains.")
        previous = model.inputs[0]
        for layer in layers:
            node = layer._inbound_nodes[0]
            if len(node.input_tensors) != 1 or node.input_tensors[0] is not previous:
                raise ValueError(
                    f"Layer '{layer.name}' does not take the previous layer's output: `prune` "
                    "supports chains of layers (no branches or skip connections).")
            previous = node.output_tensors[0]
    return layers, tuple(int(d) for d in shape[1:])


def _check_layer(layer, registry):
    if type(layer) not in registry:
        supported = ", ".join(sorted(cls.__name__ for cls in registry))
        from keras_dynhp.models import connector_names

        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no gated form: `prune` converts chains "
            f"of {supported} layers, with layers that act on each channel alone between them "
            f"({connector_names()}). Remove it, or strip it into the data pipeline.")
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise ValueError(f"Layer '{layer.name}' is LoRA-enabled or quantized: `prune` needs a plain float layer.")
    dropped = [name for name in ("kernel_regularizer", "bias_regularizer", "activity_regularizer",
                                 "kernel_constraint", "bias_constraint") if getattr(layer, name, None)]
    if dropped:
        warnings.warn(
            f"Layer '{layer.name}': {', '.join(dropped)} not carried over to its gated form (use "
            "`weight_decay` for an L2 penalty on the gated weights).", UserWarning, stacklevel=3)


#: `prune`'s default initial drop rate: every inference gate then reads 1, so a trained model
#: converted with the defaults predicts exactly as before (see `droprate_init`).
PRUNE_DROPRATE = 0.05


def prune(model, l0_lambda=None, droprate_init=PRUNE_DROPRATE, penalty=DEFAULT_PENALTY, weight_decay=0.0,
          seed=None, compile=True, name=None):
    """Converts a Keras model's Dense chain into a DynHPModel (gated layers, weights carried over).

    Args:
        model: A built `keras.Sequential` or functional model (see the module
            docstring for what is supported).
        l0_lambda: L0 strength, a float or one value per layer (None: the
            penalty's setting, 0.001 for "size", 0.01 for "louizos";
            :data:`keras_dynhp.penalty.SETTINGS`).
        droprate_init: Initial drop rate of the gates (default 0.05). The
            inference gate of a unit is 1 when `droprate_init` <= 0.08, so the
            converted model then predicts exactly as the original before
            training (a trained model is not perturbed by the conversion).
        penalty: "size" (the default, as :func:`keras_dynhp.build_mlp`) or
            "louizos" (:mod:`keras_dynhp.penalty`).
        weight_decay: L2 strength on the gated weights.
        seed: Seed of the gate parameters and noise.
        compile: Compile like `model` (its loss, metrics, loss weights, and a
            fresh optimizer of the same class and settings). An uncompiled
            `model` whose last layer is a softmax gets Adam and sparse
            categorical cross-entropy with accuracy.
        name: Name of the new model (default `<model name>_dynhp`).

    Returns:
        A :class:`~keras_dynhp.models.DynHPModel`.

    Raises:
        ValueError: For unsupported models or layers (named in the message).

    Example:
        >>> base = keras.Sequential([keras.Input((784,)), keras.layers.Dense(300, "relu"),
        ...                          keras.layers.Dense(10, "softmax")])
        >>> model = keras_dynhp.prune(base)                      # doctest: +SKIP
        >>> model.fit(x, y, mode="hp", epochs=10)                 # doctest: +SKIP
        >>> compact = keras_dynhp.strip(model)                    # doctest: +SKIP
    """
    from keras_dynhp.models import DynHPModel

    from keras_dynhp.layers import L0Conv2D
    from keras_dynhp.models import is_connector

    layers, input_shape = _chain_layers(model)
    registry = registered_gated_layers()
    gated_plain, connectors = [], []
    for layer in layers:
        if is_connector(layer) and type(layer) not in registry:
            if not gated_plain:
                raise ValueError(
                    f"Layer '{layer.name}' ({type(layer).__name__}) comes before the first Dense or Conv2D "
                    "layer: `prune` needs a gated layer first (apply it to the data instead).")
            if channel_layers.channel_handler(layer) is not None:
                channel_layers.check_channel_layer(layer)
            connectors[-1].append(layer)
            continue
        _check_layer(layer, registry)
        gated_plain.append(layer)
        connectors.append([])
    if not gated_plain:
        raise ValueError("The model has no layer to convert.")
    if connectors[-1]:
        raise ValueError(f"Layer '{connectors[-1][0].name}' follows the last Dense layer: `prune` needs the "
                         "model to end with a Dense (or Conv2D) layer.")
    penalty, l0_lambda, droprate_init = resolve_settings(penalty, l0_lambda, droprate_init)
    lambdas = list(l0_lambda) if isinstance(l0_lambda, (list, tuple)) else [l0_lambda] * len(gated_plain)
    if len(lambdas) != len(gated_plain):
        raise ValueError(f"`l0_lambda` needs one value per layer ({len(gated_plain)}); received {len(lambdas)}.")
    gated = []
    for i, (layer, lam) in enumerate(zip(gated_plain, lambdas)):
        kwargs = dict(l0_lambda=lam, droprate_init=droprate_init, penalty=penalty, weight_decay=weight_decay,
                      seed=None if seed is None else seed + i)
        if i == 0 and registry[type(layer)] is L0Conv2D:
            kwargs["gate_inputs"] = False  # image channels: never gated
        gated.append(registry[type(layer)].from_plain(layer, **kwargs))
    image = len(input_shape) > 1
    new = DynHPModel(gated, input_shape=input_shape if image else None,
                     input_dim=None if image else input_shape[0],
                     connectors=[[_copy_connector(c) for c in gap] for gap in connectors[:-1]]
                     if image or any(connectors) else None,
                     penalty=penalty, name=name or f"{model.name}_dynhp")
    if compile:
        _compile_like(new, model)
    return new


def _copy_connector(layer):
    """A copy of a layer between gated layers: with its weights for a channel layer (BatchNormalization)."""
    if channel_layers.channel_handler(layer) is not None:
        return channel_layers.copy_channel_layer(layer)
    return type(layer).from_config(layer.get_config())


def _compile_like(new, model):
    config = model.get_compile_config() if getattr(model, "compiled", False) else None
    if config:
        new.compile(optimizer=keras.optimizers.deserialize(config["optimizer"]), loss=config["loss"],
                    loss_weights=config.get("loss_weights"), metrics=config.get("metrics"),
                    weighted_metrics=config.get("weighted_metrics"))
        return
    activation = getattr(new.gated_layers[-1].activation, "__name__", None)
    if activation != "softmax":
        raise ValueError(
            "The model is not compiled and its last layer is not a softmax, so `prune` cannot guess a "
            "loss: compile the model first, or pass compile=False and compile the result.")
    new.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
