"""`prune(model)`: bring your own Keras model (tfmot's `prune_low_magnitude`, for DynHP).

Converts a built Keras model that is a chain of layers with a registered gated
form (:func:`keras_dynhp.layers.register_gated_layer`; today `keras.layers.Dense`
-> :class:`~keras_dynhp.layers.L0Dense`) into a
:class:`~keras_dynhp.models.DynHPModel` that trains with `sp`, `hp` and `dynhp`.
Weights and biases are carried over; each unit gets a hard-concrete gate.
:func:`keras_dynhp.strip` gives back a plain Keras model afterwards.

Supported: a `keras.Sequential` or functional model with one rank-2 input
`(batch, features)` and one output, made of registered layers in a chain
(each one's output feeding only the next). Anything else is a clear
`ValueError` naming the layer; flatten image inputs beforehand
(`x.reshape(len(x), -1)`) and build the model on `(features,)`.
"""

import warnings

import keras

from keras_dynhp.layers.base import registered_gated_layers


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
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"`prune` supports inputs of shape (batch, features); this model takes {shape}. Flatten "
            "the data (x.reshape(len(x), -1)) and build the model on keras.Input((features,)).")
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
    return layers, int(shape[-1])


def _check_layer(layer, registry):
    if type(layer) not in registry:
        supported = ", ".join(sorted(cls.__name__ for cls in registry))
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no gated form: `prune` converts chains "
            f"of {supported} layers. Remove it, or strip it into the data pipeline.")
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise ValueError(f"Layer '{layer.name}' is LoRA-enabled or quantized: `prune` needs a plain float layer.")
    dropped = [name for name in ("kernel_regularizer", "bias_regularizer", "activity_regularizer",
                                 "kernel_constraint", "bias_constraint") if getattr(layer, name, None)]
    if dropped:
        warnings.warn(
            f"Layer '{layer.name}': {', '.join(dropped)} not carried over to its gated form (use "
            "`weight_decay` for an L2 penalty on the gated weights).", UserWarning, stacklevel=3)


def prune(model, l0_lambda=0.01, droprate_init=0.5, penalty="louizos", weight_decay=0.0,
          seed=None, compile=True, name=None):
    """Converts a Keras model's Dense chain into a DynHPModel (gated layers, weights carried over).

    Args:
        model: A built `keras.Sequential` or functional model (see the module
            docstring for what is supported).
        l0_lambda: L0 strength, a float or one value per layer.
        droprate_init: Initial drop rate of the gates. The inference gate of a
            unit is 1 when `droprate_init` <= 0.08, so the converted model then
            predicts exactly as the original before training.
        penalty: "louizos" or "size" (:mod:`keras_dynhp.penalty`).
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

    layers, input_dim = _chain_layers(model)
    if not layers:
        raise ValueError("The model has no layer to convert.")
    registry = registered_gated_layers()
    for layer in layers:
        _check_layer(layer, registry)
    lambdas = list(l0_lambda) if isinstance(l0_lambda, (list, tuple)) else [l0_lambda] * len(layers)
    if len(lambdas) != len(layers):
        raise ValueError(f"`l0_lambda` needs one value per layer ({len(layers)}); received {len(lambdas)}.")
    gated = [registry[type(layer)].from_plain(
        layer, l0_lambda=lam, droprate_init=droprate_init, penalty=penalty, weight_decay=weight_decay,
        seed=None if seed is None else seed + i) for i, (layer, lam) in enumerate(zip(layers, lambdas))]
    new = DynHPModel(gated, input_dim=input_dim, penalty=penalty, name=name or f"{model.name}_dynhp")
    if compile:
        _compile_like(new, model)
    return new


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
