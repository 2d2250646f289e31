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
producer loses (:mod:`keras_dynhp.layers.channels`). Residual connections
(an `Add` of a block's input, directly or through shortcut layers, and its
output: MobileNetV2, ResNets; :mod:`keras_dynhp.graph`) become
:class:`~keras_dynhp.layers.skip.SkipSave` / :class:`~keras_dynhp.layers.skip.SkipAdd`;
the channels an `Add` ties are kept whole (their consumer gets no gates) and
every block's inner channels are pruned. The first convolution's image
channels get no gates. Anything else (`Concatenate`, a skip inside a skip, a
layer used twice) is a clear `ValueError` naming the layer.
"""

import warnings

import keras

from keras_dynhp.graph import trace_chain
from keras_dynhp.layers import channels as channel_layers
from keras_dynhp.layers.base import registered_gated_layers
from keras_dynhp.layers.skip import SkipAdd, SkipSave
from keras_dynhp.penalty import DEFAULT_PENALTY, resolve_settings


def _chain_steps(model):
    """The model's main path with its skips (:func:`keras_dynhp.graph.trace_chain`), and its input shape."""
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
    steps = trace_chain(model)
    return steps, tuple(int(d) for d in shape[1:])


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
    """Converts a Keras model (Dense / Conv2D layers, with what sits between them) into a DynHPModel.

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
    from keras_dynhp.layers import L0Conv2D
    from keras_dynhp.models import DynHPModel, is_connector

    steps, input_shape = _chain_steps(model)
    registry = registered_gated_layers()
    gated_plain, connectors = [], []
    for step in steps:
        layer = None if step[0] == "save" else step[-1]
        if not gated_plain and (layer is None or is_connector(layer) and type(layer) not in registry):
            what = "A skip connection" if layer is None else f"Layer '{layer.name}' ({type(layer).__name__})"
            raise ValueError(f"{what} comes before the first Dense or Conv2D layer: `prune` needs a gated "
                             "layer first (apply it to the data instead).")
        if step[0] == "save":
            connectors[-1].append(SkipSave(step[1]))
            continue
        if step[0] == "add":
            _, key, shortcut, add = step
            shortcut = [_copy_shortcut_layer(s) for s in shortcut]
            connectors[-1].append(SkipAdd(key, shortcut=shortcut, name=add.name))
            continue
        if is_connector(layer) and type(layer) not in registry:
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
        if i > 0 and any(isinstance(c, (SkipSave, SkipAdd)) for c in connectors[i - 1]):
            kwargs["gate_inputs"] = False  # channels tied by a residual Add: kept whole (layers/skip.py)
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


def _copy_shortcut_layer(layer):
    """A built copy of a layer on a skip connection, with its weights (kept whole: never pruned)."""
    copy = type(layer).from_config(layer.get_config())
    copy.build(tuple(layer.input.shape))
    copy.set_weights(layer.get_weights())
    return copy


def _copy_connector(layer):
    """A copy of a layer between gated layers: with its weights for a channel layer (BatchNormalization)."""
    if isinstance(layer, (SkipSave, SkipAdd)):  # made by `prune` itself
        return layer
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
