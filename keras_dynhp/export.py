"""Export: a gate-free compact Keras model and LiteRT (TFLite) files.

:func:`strip` folds the deterministic inference gates into the kernels
(`W'_j = z_j * W_j`, row j scaled by gate j), removes units whose gate is exactly
0 and keeps the surviving input pixels with a fixed gather in front, built from
Keras's own layers (:func:`gather_inputs`), so the compact model saves to a
`.keras` file that plain Keras loads without keras_dynhp. Its predictions equal
the gated model's inference predictions.

:func:`export_tflite` writes the compact model as a LiteRT file: float32,
dynamic-range, float16 or full-integer int8 (int8 input, output and ops, the
form the Edge TPU compiler takes; `edgetpu_compiler` itself runs outside this
project). Running such files (predict, evaluate, benchmark, checking that a
file is full-integer) is :mod:`keras_dynhp.litert`'s job; trainable files
(on-device re-training) are in :mod:`keras_dynhp.ondevice`. Every file goes
through :func:`convert_saved_model`.
"""

import functools

import keras
import numpy as np

from keras_dynhp._io import write_bytes
from keras_dynhp.data import ScaledArray
from keras_dynhp.graph import trace_chain
from keras_dynhp.layers import FeatureSelect, L0Dense
from keras_dynhp.layers import channels as channel_layers
from keras_dynhp.layers.select import narrower_flat_map
from keras_dynhp.layers.skip import SkipAdd, SkipSave
from keras_dynhp.penalty import delivered_masks


def _check_model(model):
    from keras_dynhp.models import DynHPModel

    if not isinstance(model, DynHPModel):
        raise ValueError(f"Expected a DynHPModel; received {type(model).__name__}.")
    if not model.built or model.optimizer is None or int(model.optimizer.iterations) == 0:
        raise ValueError(
            "This model was never trained: fit it (or load a trained .keras file) before exporting."
        )


def kept_inputs(model):
    """Indices of the input features (pixels) the compact model of `model` reads.

    Args:
        model: A trained :class:`~keras_dynhp.models.DynHPModel`.

    Returns:
        Sorted int32 NumPy array of indices into the original `input_dim` inputs:
        those hard pruning kept whose inference gate is non-zero.
    """
    _check_model(model)
    keep = delivered_masks(model.gated_layers[:1])[0]
    indices = model.feature_select.indices
    indices = np.arange(model.input_dim) if indices is None else np.asarray(indices)
    return indices[keep].astype("int32")


def _runs(indices):
    """Contiguous runs `(start, stop)` of sorted, distinct `indices`."""
    indices = np.asarray(indices)
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(indices, breaks)]


# Weight-free layers a gather sub-model may consist of (what `gather_inputs` builds).
_GATHER_LAYERS = (keras.layers.InputLayer, keras.layers.Reshape, keras.layers.Cropping1D,
                  keras.layers.Concatenate)


def gather_inputs(input_dim, indices, name="feature_select"):
    """A fixed gather of input features made of built-in Keras layers only.

    `Reshape` to `(input_dim, 1)`, one `Cropping1D` per contiguous run of
    `indices`, `Concatenate`, `Reshape` back: no weights and no custom layer,
    so a model holding it loads in a process that never imported keras_dynhp.
    :func:`dense_stack` reads it back as a gather (LiteRT files use one GATHER op).

    Args:
        input_dim: Width of the full input.
        indices: Sorted, distinct feature indices to keep.
        name: Name of the sub-model.

    Returns:
        A functional `keras.Model` from `(batch, input_dim)` to
        `(batch, len(indices))`.

    Example:
        >>> g = gather_inputs(6, [0, 2, 3])
        >>> np.asarray(g(np.arange(6, dtype="float32")[None])).tolist()
        [[0.0, 2.0, 3.0]]
    """
    indices = np.asarray(indices, dtype="int64")
    if (indices.ndim != 1 or not len(indices) or np.any(np.diff(indices) <= 0)
            or indices[0] < 0 or indices[-1] >= input_dim):
        raise ValueError(
            f"`indices` must be sorted, distinct feature indices in [0, {input_dim}); "
            f"received {indices.tolist()!r}."
        )
    inputs = keras.Input((input_dim,), name=f"{name}_input")
    h = keras.layers.Reshape((input_dim, 1), name=f"{name}_columns")(inputs)
    parts = [keras.layers.Cropping1D((start, input_dim - stop), name=f"{name}_run_{k}")(h)
             for k, (start, stop) in enumerate(_runs(indices))]
    h = parts[0] if len(parts) == 1 else keras.layers.Concatenate(axis=1, name=f"{name}_concat")(parts)
    outputs = keras.layers.Reshape((len(indices),), name=f"{name}_rows")(h)
    return keras.Model(inputs, outputs, name=name)


def _gather_indices(layer):
    """The indices a weight-free gather sub-model (e.g. :func:`gather_inputs`) selects, or None."""
    if not isinstance(layer, keras.Model) or layer.weights or not getattr(layer, "inputs", None):
        return None
    if not all(isinstance(inner, _GATHER_LAYERS) for inner in layer.layers):
        return None
    width = layer.inputs[0].shape[-1]
    probe = np.arange(width, dtype="float32")[None]  # exact in float32 for any input width < 2**24
    out = np.asarray(keras.ops.convert_to_numpy(layer(probe)))
    if out.ndim != 2 or not out.size:
        return None
    return int(width), out[0].astype("int32")


def select_channels(channels, indices, name="feature_select"):
    """A fixed gather of image channels made of a built-in layer: a 1x1 `Conv2D` with a 0/1 kernel.

    Exact (each output is 1 * one input channel) and loadable without
    keras_dynhp, like :func:`gather_inputs` for flat inputs.
    """
    conv = keras.layers.Conv2D(len(indices), 1, use_bias=False, name=name)
    conv.build((None, None, None, int(channels)))
    kernel = np.zeros((1, 1, int(channels), len(indices)), "float32")
    kernel[0, 0, np.asarray(indices), np.arange(len(indices))] = 1.0
    conv.set_weights([kernel])
    return conv


def strip(model, name=None, select_inputs=True):
    """Returns a plain Keras model without gates, with zero-gated units removed.

    The result holds built-in Keras layers only: it saves to a `.keras` file
    that `keras.saving.load_model` loads in a process that never imported
    keras_dynhp.

    Args:
        model: A trained :class:`~keras_dynhp.models.DynHPModel`.
        name: Name of the new model (default: `<model name>_compact`).
        select_inputs: True: the model takes all `input_dim` features and picks
            the kept ones with a fixed gather (:func:`gather_inputs`, present
            only when input features were pruned). False: no gather; the model
            takes only the kept features, `x[:, kept_inputs(model)]` (for
            accelerators without a GATHER op, such as the Edge TPU).

    Returns:
        A functional `keras.Model`: the gather (if `select_inputs` and features
        were pruned) then each gated layer's plain equivalent
        (`keras.layers.Dense` for L0Dense, `keras.layers.Conv2D` for L0Conv2D),
        with the model's layers between them (pooling, Flatten, activations;
        BatchNormalization and DepthwiseConv2D with their kept channels' weights;
        a residual connection as a Keras `Add`) and, after a Flatten whose features were partly pruned, a fixed gather of
        the kept ones.

    Raises:
        ValueError: If the model is not a trained DynHPModel.
    """
    _check_model(model)
    layers, links = model.gated_layers, model.links()
    keep = delivered_masks(layers)  # non-zero inference gates; never an empty layer
    indices = kept_inputs(model)
    shape = tuple(model.input_shape_per_example)
    image = len(shape) > 1
    if select_inputs:
        inputs = keras.Input(shape, name="pixels")
        x = inputs
        if len(indices) < model.input_dim:
            x = (select_channels(model.input_dim, indices) if image
                 else gather_inputs(model.input_dim, indices, name="feature_select"))(x)
    else:
        inputs = keras.Input(shape[:-1] + (len(indices),), name="selected_pixels")
        x = inputs
    saved = {}
    for i, layer in enumerate(layers):
        last = i + 1 == len(layers)
        if last:
            keep_outputs = None
        elif links[i + 1] is None:
            keep_outputs = np.flatnonzero(keep[i + 1])
        else:  # after a Flatten: the channels some delivered feature reads
            keep_outputs = np.unique(links[i + 1][keep[i + 1]])
        kind = "dense" if isinstance(layer, L0Dense) else "conv"
        x = layer.to_plain(np.flatnonzero(keep[i]), keep_outputs, name=f"{kind}_{i}")(x)
        if last:
            break
        for connector in model.connectors[i]:
            if isinstance(connector, SkipSave):
                saved[connector.key] = x
                continue
            if isinstance(connector, SkipAdd):  # tied channels: kept whole, the shortcut copied as it is
                shortcut = saved[connector.key]
                for layer_on_skip in connector.shortcut:
                    shortcut = _copy_with_weights(layer_on_skip, shortcut)
                x = keras.layers.Add(name=connector.name)([x, shortcut])
                continue
            if channel_layers.channel_handler(connector) is not None:  # its weights, the kept channels
                connector = (channel_layers.copy_channel_layer(connector) if keep_outputs is None
                             else channel_layers.sliced_copy(connector, keep_outputs))
            else:
                connector = connector.__class__.from_config(connector.get_config())
            x = connector(x)
        select = model.link_selects[i]
        if select is not None:
            channels = layer.output_units
            flat = np.arange(select.input_dim) if select.indices is None else np.asarray(select.indices)
            renumbered = narrower_flat_map(flat[keep[i + 1]], channels, keep_outputs)
            width = select.input_dim // channels * len(keep_outputs)
            if len(renumbered) < width:
                x = gather_inputs(width, renumbered, name=f"feature_select_{i + 1}")(x)
    return keras.Model(inputs, x, name=name or f"{model.name}_compact")


def _copy_with_weights(layer, x):
    """A copy of a plain Keras layer applied to `x`, holding the layer's weights."""
    copy = type(layer).from_config(layer.get_config())
    y = copy(x)
    copy.set_weights(layer.get_weights())
    return y


_HIDDEN_ACTIVATIONS = ("relu", "relu6", "tanh", "sigmoid", "linear")
_OUTPUT_ACTIVATIONS = ("softmax", "linear")


def _activation_name(layer):
    fn = layer.activation
    name = getattr(fn, "__name__", None)
    if name is None or keras.activations.get(name) is not fn:
        raise ValueError(
            f"Layer '{layer.name}' has an activation this exporter does not support ({fn!r}); "
            f"use one of {_HIDDEN_ACTIVATIONS} (hidden) or {_OUTPUT_ACTIVATIONS} (output)."
        )
    return name


def dense_stack(model, select_inputs=True):
    """Reads a compact network as NumPy: a gather plus a list of dense layers.

    Every LiteRT file is built from this (whatever backend trained the model),
    not from the backend's own graph.

    Args:
        model: A trained :class:`~keras_dynhp.models.DynHPModel` (stripped with
            :func:`keras_dynhp.export.strip` first) or a built Keras model made of an
            optional leading gather (`FeatureSelect`, or a weight-free sub-model of
            `Reshape`/`Cropping1D`/`Concatenate` layers such as
            :func:`gather_inputs`) and `Dense` layers.
        select_inputs: For a DynHPModel: keep the pixel gather (see :func:`strip`).

    Returns:
        A dict with `input_dim`, `indices` (kept input features or None),
        `layers` (a list of `(kernel, bias or None, activation name)` NumPy tuples)
        and `name`.

    Raises:
        ValueError: For an untrained DynHPModel, an un-built model or unsupported
            layers or activations.
    """
    from keras_dynhp.models import DynHPModel

    check_exportable(model)
    if isinstance(model, DynHPModel):
        model = strip(model, select_inputs=select_inputs)
    indices, layers, input_dim = None, [], None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        gather = _gather_indices(layer)
        if isinstance(layer, FeatureSelect) or gather is not None:
            if layers or input_dim is not None:
                raise ValueError(f"The input gather ('{layer.name}') must be the first layer of the model.")
            if gather is not None:
                input_dim, indices = gather
            else:
                input_dim = layer.input_dim
                indices = None if layer.indices is None else np.asarray(layer.indices, "int32")
            continue
        if not isinstance(layer, keras.layers.Dense):
            raise ValueError(
                f"LiteRT files are built from an input gather and Dense layers only; layer "
                f"'{layer.name}' is a {type(layer).__name__}."
            )
        kernel = keras.ops.convert_to_numpy(layer.kernel).astype("float32")
        bias = keras.ops.convert_to_numpy(layer.bias).astype("float32") if layer.use_bias else None
        if input_dim is None:
            input_dim = kernel.shape[0]
        layers.append((kernel, bias, _activation_name(layer)))
    if not layers:
        raise ValueError("The model has no Dense layer to train.")
    for kernel, _, act in layers[:-1]:
        if act not in _HIDDEN_ACTIVATIONS:
            raise ValueError(f"Hidden activation {act!r} is not supported; use one of {_HIDDEN_ACTIVATIONS}.")
    if layers[-1][2] not in _OUTPUT_ACTIVATIONS:
        raise ValueError(
            f"Output activation {layers[-1][2]!r} is not supported; use one of {_OUTPUT_ACTIVATIONS}."
        )
    inputs = getattr(model, "inputs", None)
    input_name = inputs[0].name.split(":")[0] if inputs else "pixels"
    return {"input_dim": int(input_dim), "indices": indices, "layers": layers, "name": model.name,
            "input_name": input_name}


def _tf_activations(tf):
    """The TensorFlow function of each activation name a stack may hold."""
    return {"relu": tf.nn.relu, "relu6": tf.nn.relu6, "tanh": tf.tanh, "sigmoid": tf.sigmoid,
            "softmax": tf.nn.softmax, "linear": lambda h: h}


def _inference_module(stack, batch_size):
    """A `tf.Module` computing the network of `stack` from constants (any backend trained it)."""
    import tensorflow as tf

    activations = _tf_activations(tf)
    indices = None if stack["indices"] is None else tf.constant(stack["indices"], tf.int32)
    layers = [(tf.constant(k), None if b is None else tf.constant(b), activations[a])
              for k, b, a in stack["layers"]]
    spec = tf.TensorSpec([batch_size, stack["input_dim"]], tf.float32, name=stack["input_name"])

    class Inference(tf.Module):
        @tf.function(input_signature=[spec])
        def serve(self, x):
            h = x if indices is None else tf.gather(x, indices, axis=1)
            for kernel, bias, activation in layers:
                h = tf.matmul(h, kernel)
                if bias is not None:
                    h = tf.nn.bias_add(h, bias)
                h = activation(h)
            return {"output_0": h}

    return Inference()


_POOLS = {keras.layers.MaxPooling2D: "max_pool", keras.layers.AveragePooling2D: "avg_pool"}
_GLOBAL_POOLS = {keras.layers.GlobalMaxPooling2D: "global_max_pool",
                 keras.layers.GlobalAveragePooling2D: "global_avg_pool"}


def layer_stack(model, select_inputs=True):
    """Reads a compact network with convolutions as NumPy: a list of operations.

    The LiteRT files of convolutional networks are built from this, as
    :func:`dense_stack` builds those of dense ones (whatever backend trained
    the model).

    Args:
        model: A trained :class:`~keras_dynhp.models.DynHPModel` (stripped with
            :func:`strip` first) or a built Keras model of `Conv2D`, pooling,
            `Flatten`, `Dropout`, `Dense` layers and fixed gathers (as
            :func:`strip` makes them).
        select_inputs: For a DynHPModel: keep the input gather (see :func:`strip`).

    Returns:
        A dict with `input_shape` (one example's), `ops` (tuples: `("conv",
        kernel, bias, activation, strides, padding)`, `("depthwise", kernel,
        bias, activation, strides, padding)`, `("max_pool" | "avg_pool",
        size, strides, padding)`, `("global_max_pool" | "global_avg_pool",)`,
        `("flatten",)`, `("gather", indices)`, `("dense", kernel, bias,
        activation)`, `("pad", ((top, bottom), (left, right)))`,
        `("activation", name)`, `("scale_shift", scale, shift)`, `("save",
        key)` and `("add", key, shortcut ops)` for a residual connection),
        `name` and `input_name`. A BatchNormalization (inference mode) is folded into the
        convolution or dense layer right before it when that one has no
        activation, else it is a `scale_shift`.

    Raises:
        ValueError: For layers or activations it cannot express.
    """
    from keras_dynhp.models import DynHPModel

    check_exportable(model)
    if isinstance(model, DynHPModel):
        model = strip(model, select_inputs=select_inputs)
    operations = []
    for step in trace_chain(model):
        if step[0] == "save":
            operations.append(("save", step[1]))
        elif step[0] == "add":
            shortcut = []
            for layer in step[2]:
                _append_layer_ops(layer, shortcut)
            operations.append(("add", step[1], [op for op in shortcut if op is not None]))
        else:
            _append_layer_ops(step[1], operations)
    operations = [op for op in operations if op is not None]
    if not any(op[0] in ("conv", "dense") for op in operations):
        raise ValueError("The model has no Conv2D or Dense layer.")
    inputs = getattr(model, "inputs", None)
    input_name = inputs[0].name.split(":")[0] if inputs else "pixels"
    return {"input_shape": tuple(int(d) for d in model.inputs[0].shape[1:]), "ops": operations,
            "name": model.name, "input_name": input_name}


def _append_layer_ops(layer, operations):
    """Appends the operation of one layer of a compact model to `operations` (see :func:`layer_stack`)."""
    if isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout)):
        return
    gather = _gather_indices(layer)
    if gather is not None:
        operations.append(("gather", gather[1]))
    elif isinstance(layer, FeatureSelect):
        if layer.indices is not None:
            operations.append(("gather", np.asarray(layer.indices, "int32")))
    elif isinstance(layer, keras.layers.Conv2D) and type(layer) is keras.layers.Conv2D:
        if layer.data_format != "channels_last" or tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1:
            raise ValueError(f"Conv2D '{layer.name}': only channels_last, undilated, ungrouped convolutions.")
        operations.append(_convolution_op("conv", layer))
    elif type(layer) is keras.layers.DepthwiseConv2D:
        channel_layers.check_channel_layer(layer)
        operations.append(_convolution_op("depthwise", layer))
    elif type(layer) is keras.layers.BatchNormalization:
        channel_layers.check_channel_layer(layer)
        operations.append(_fold_batch_norm(layer, operations))
    elif type(layer) is keras.layers.ZeroPadding2D:
        if layer.data_format != "channels_last":
            raise ValueError(f"ZeroPadding2D '{layer.name}': only channels_last.")
        operations.append(("pad", tuple(tuple(int(p) for p in side) for side in layer.padding)))
    elif type(layer) in (keras.layers.ReLU, keras.layers.Activation):
        operations.append(("activation", _layer_activation_name(layer)))
    elif type(layer) in _POOLS:
        operations.append((_POOLS[type(layer)], tuple(layer.pool_size), tuple(layer.strides), layer.padding))
    elif type(layer) in _GLOBAL_POOLS:
        operations.append((_GLOBAL_POOLS[type(layer)],))
    elif isinstance(layer, keras.layers.Flatten):
        operations.append(("flatten",))
    elif isinstance(layer, keras.layers.Dense):
        kernel = keras.ops.convert_to_numpy(layer.kernel).astype("float32")
        bias = keras.ops.convert_to_numpy(layer.bias).astype("float32") if layer.use_bias else None
        operations.append(("dense", kernel, bias, _activation_name(layer)))
    else:
        raise ValueError(
            f"LiteRT files are built from Conv2D, DepthwiseConv2D, BatchNormalization, pooling, "
            f"ZeroPadding2D, activation, Flatten, Dense layers and fixed gathers; layer '{layer.name}' "
            f"is a {type(layer).__name__}.")


def _convolution_op(kind, layer):
    """`(kind, kernel, bias, activation, strides, padding)` of a Conv2D or DepthwiseConv2D layer."""
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype("float32")
    bias = keras.ops.convert_to_numpy(layer.bias).astype("float32") if layer.use_bias else None
    return (kind, kernel, bias, _activation_name(layer), tuple(layer.strides), layer.padding)


def _layer_activation_name(layer):
    """The activation of a `ReLU` or `Activation` layer, by name ("relu", "relu6", ...)."""
    if isinstance(layer, keras.layers.ReLU):
        max_value = None if layer.max_value is None else float(layer.max_value)
        if float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0 and max_value in (None, 6.0):
            return "relu" if max_value is None else "relu6"
        raise ValueError(f"ReLU '{layer.name}': only max_value None or 6, no negative slope or threshold.")
    return _activation_name(layer)


def _fold_batch_norm(layer, operations):
    """A BatchNormalization in inference mode, folded into the op before it when that one is linear.

    `y = gamma * (x - mean) / sqrt(var + eps) + beta = scale * x + shift`; after
    `x = W h + b` that is `(scale W) h + (scale b + shift)`, exact in float.

    Returns:
        The `scale_shift` op, or None when it was folded (the op before it replaced).
    """
    value = lambda v: keras.ops.convert_to_numpy(v).astype("float64")
    gamma = value(layer.gamma) if layer.scale else 1.0
    beta = value(layer.beta) if layer.center else 0.0
    scale = gamma / np.sqrt(value(layer.moving_variance) + layer.epsilon)
    shift = beta - value(layer.moving_mean) * scale
    previous = operations[-1] if operations else None
    if previous is not None and previous[0] in ("conv", "depthwise", "dense") and previous[3] == "linear":
        kind, kernel, bias = previous[:3]
        axis_scale = scale[None, None, :, None] if kind == "depthwise" else scale
        bias = shift if bias is None else bias * scale + shift
        operations[-1] = (kind, (kernel * axis_scale).astype("float32"), bias.astype("float32"), *previous[3:])
        return None
    return ("scale_shift", scale.astype("float32"), shift.astype("float32"))


def _ops_module(stack, batch_size):
    """A `tf.Module` computing the operations of a :func:`layer_stack` from constants."""
    import tensorflow as tf

    steps = _tf_steps(tf, stack["ops"])
    spec = tf.TensorSpec([batch_size, *stack["input_shape"]], tf.float32, name=stack["input_name"])

    class Inference(tf.Module):
        @tf.function(input_signature=[spec])
        def serve(self, x):
            return {"output_0": _run_steps(steps, x, {})}

    return Inference()


def _run_steps(steps, h, saved):
    """Applies :func:`_tf_steps`' steps to `h`; `saved` holds the tensors kept for residual adds."""
    for kind, step in steps:
        if kind == "save":
            saved[step] = h
        elif kind == "add":
            key, shortcut = step
            h = h + _run_steps(shortcut, saved[key], saved)
        else:
            h = step(h)
    return h


def _tf_steps(tf, operations):
    """`(kind, step)` per operation: a function of the tensor, a key ("save"), `(key, shortcut steps)` ("add")."""
    activations = _tf_activations(tf)
    steps = []
    for op in operations:
        kind = op[0]
        if kind == "save":
            steps.append(("save", op[1]))
            continue
        if kind == "add":
            steps.append(("add", (op[1], _tf_steps(tf, op[2]))))
            continue
        steps.append((kind, _tf_step(tf, activations, op)))
    return steps


def _tf_step(tf, activations, op):
    """The TensorFlow function of one operation of a :func:`layer_stack`."""
    kind = op[0]
    if kind in ("conv", "depthwise"):
        _, kernel, bias, act, strides, padding = op
        return functools.partial(
            _conv_step if kind == "conv" else _depthwise_step, tf.constant(kernel),
            None if bias is None else tf.constant(bias), activations[act], [1, *strides, 1], padding.upper())
    if kind == "pad":
        (top, bottom), (left, right) = op[1]
        return functools.partial(tf.pad, paddings=[[0, 0], [top, bottom], [left, right], [0, 0]])
    if kind == "activation":
        return activations[op[1]]
    if kind == "scale_shift":
        return functools.partial(_scale_shift_step, tf.constant(op[1]), tf.constant(op[2]))
    if kind in ("max_pool", "avg_pool"):
        _, size, strides, padding = op
        pool = tf.nn.max_pool2d if kind == "max_pool" else tf.nn.avg_pool2d
        return functools.partial(pool, ksize=list(size), strides=list(strides), padding=padding.upper())
    if kind in ("global_max_pool", "global_avg_pool"):
        reduce = tf.reduce_max if kind == "global_max_pool" else tf.reduce_mean
        return functools.partial(reduce, axis=[1, 2])
    if kind == "flatten":
        return lambda h: tf.reshape(h, [-1, int(np.prod(h.shape[1:]))])
    if kind == "gather":
        return functools.partial(tf.gather, indices=tf.constant(op[1], tf.int32), axis=-1)
    _, kernel, bias, act = op
    return functools.partial(_dense_step, tf.constant(kernel), None if bias is None else tf.constant(bias),
                             activations[act])


def _conv_step(kernel, bias, activation, strides, padding, h):
    import tensorflow as tf

    h = tf.nn.conv2d(h, kernel, strides=strides, padding=padding)
    return activation(h if bias is None else tf.nn.bias_add(h, bias))


def _depthwise_step(kernel, bias, activation, strides, padding, h):
    import tensorflow as tf

    h = tf.nn.depthwise_conv2d(h, kernel, strides=strides, padding=padding)
    return activation(h if bias is None else tf.nn.bias_add(h, bias))


def _scale_shift_step(scale, shift, h):
    return h * scale + shift


def _dense_step(kernel, bias, activation, h):
    import tensorflow as tf

    h = tf.matmul(h, kernel)
    return activation(h if bias is None else tf.nn.bias_add(h, bias))


QUANTIZATIONS = (None, "dynamic", "float16", "int8")
# Calibration examples used for full-integer quantization (a seeded subset).
MAX_CALIBRATION_SAMPLES = 300


def check_exportable(model):
    """Raises a clear ValueError unless `model` can be exported.

    A DynHPModel must have been trained (or loaded from a trained `.keras`
    file); any other Keras model must be built, i.e. know its input shape.

    Args:
        model: The model to check.

    Raises:
        ValueError: If the model cannot be exported.
    """
    from keras_dynhp.models import DynHPModel

    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a Keras model; received {type(model).__name__}.")
    if isinstance(model, DynHPModel):
        _check_model(model)
        return
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' was never built: give it a `keras.Input` (or call it on data) and "
            "train it before exporting."
        )


def _input_shape(model):
    """The shape of one input example, or None if unknown."""
    from keras_dynhp.models import DynHPModel

    if isinstance(model, DynHPModel):
        return tuple(model.input_shape_per_example)
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else None
    return None if shape is None else tuple(shape[1:])


def calibration_samples(x, n=MAX_CALIBRATION_SAMPLES, seed=0):
    """The examples that calibrate an int8 file: up to `n` of `x`, a seeded random subset in order.

    The one calibration rule of the project (`export_tflite`, the CLI and the
    scripts all go through it).

    Example:
        >>> calibration_samples(np.arange(10).reshape(5, 2), n=2).shape
        (2, 2)
    """
    if not isinstance(x, ScaledArray):  # a ScaledArray converts the chosen rows only
        x = np.asarray(x)
    if len(x) <= n:
        return np.asarray(x)
    return x[np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))]


def convert_saved_model(save, path, configure=None):
    """SavedModel -> LiteRT converter -> atomic write: the path every `.tflite` file takes.

    Args:
        save: `save(directory)` writes the SavedModel to convert.
        path: Output `.tflite` path.
        configure: Optional `configure(converter)` setting the converter's options.

    Returns:
        The path written.
    """
    import shutil
    import tempfile

    import tensorflow as tf

    directory = tempfile.mkdtemp(prefix="keras_dynhp_export_")
    try:
        save(directory)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        if configure is not None:
            configure(converter)
        data = converter.convert()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    write_bytes(path, data)
    return path


def _representative_dataset(representative_data, shape):
    data = representative_data
    if isinstance(data, ScaledArray):  # only the calibration rows become float32
        data = calibration_samples(data) if len(data.shape) >= 2 and len(data) else data.values
    data = np.asarray(data)
    expected = "(n, " + ", ".join(map(str, shape or ("features",))) + ")"
    if data.ndim < 2 or (shape is not None and tuple(data.shape[1:]) != tuple(shape)) or len(data) == 0:
        raise ValueError(
            f"`representative_data` must be a non-empty array of model inputs of shape {expected}; "
            f"received shape {data.shape}."
        )
    data = data.astype("float32", copy=False)
    if not np.isfinite(data).all():
        raise ValueError("`representative_data` contains NaN or infinite values.")
    data = calibration_samples(data)

    def generator():
        for i in range(len(data)):
            yield [data[i : i + 1]]

    return generator


def export_tflite(model, path, quantization=None, representative_data=None, batch_size=None,
                  select_inputs=True):
    """Writes a LiteRT (TFLite) file of the compact model.

    Full-integer files (`quantization="int8"`) have int8 input and output tensors
    and int8 ops only (biases int32), which is what the Edge TPU compiler
    (`edgetpu_compiler`, run outside this project, on the file) expects; it also
    needs static shapes, so pass `batch_size=1` for it.

    Args:
        model: A trained DynHPModel (stripped first) or a built Keras model.
        path: Output `.tflite` path.
        quantization: None (float32), "dynamic" (dynamic-range: int8 weights,
            float activations), "float16" (float16 weights) or "int8" (full
            integer, calibrated on `representative_data`).
        representative_data: For "int8": a NumPy array of model inputs, shape
            (n, input_dim), float like the training data; up to 300 of them (a
            seeded random subset) calibrate the activation ranges. Ignored otherwise.
        batch_size: Fixed batch dimension of the input (None: dynamic, resized by
            the interpreter).
        select_inputs: For a DynHPModel: True keeps the pixel gather in the file
            (input: all `input_dim` features); False leaves it out (input:
            `x[:, kept_inputs(model)]`), so an int8 file holds FULLY_CONNECTED
            ops only, which the Edge TPU maps entirely. `representative_data`
            may still have all `input_dim` columns: the kept ones are selected.

    Returns:
        The path written.

    Raises:
        ValueError: For an unknown `quantization`, "int8" without (or with
            mis-shaped) `representative_data`, a bad `batch_size`, or a model that
            was never trained (DynHPModel) or never built (other Keras models).

    Example:
        >>> export_tflite(model, "model_int8.tflite", quantization="int8",
        ...               representative_data=x_train, batch_size=1)   # doctest: +SKIP
        'model_int8.tflite'
    """
    import tensorflow as tf

    from keras_dynhp.models import DynHPModel

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"`quantization` must be one of {QUANTIZATIONS}; received {quantization!r}.")
    if batch_size is not None and (
        isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1
    ):
        raise ValueError(f"`batch_size` must be a positive integer or None; received {batch_size!r}.")
    check_exportable(model)
    representative = None
    if quantization == "int8":
        if representative_data is None:
            raise ValueError(
                'quantization="int8" needs `representative_data`: an array of typical model inputs '
                "(e.g. a few hundred training images) to calibrate the int8 ranges."
            )
        shape = _input_shape(model)
        if isinstance(model, DynHPModel) and not select_inputs:
            kept = kept_inputs(model)
            data = np.asarray(representative_data)
            if data.ndim == len(shape) + 1 and tuple(data.shape[1:]) == shape:
                representative_data = data[..., kept]
            shape = shape[:-1] + (len(kept),)
        representative = _representative_dataset(representative_data, shape)

    fixed_batch = None if batch_size is None else int(batch_size)
    try:
        module = _inference_module(dense_stack(model, select_inputs=select_inputs), fixed_batch)
    except ValueError:
        try:  # convolutions, pooling, Flatten
            module = _ops_module(layer_stack(model, select_inputs=select_inputs), fixed_batch)
        except ValueError:  # other layer types: Keras's own export (TensorFlow backend)
            module = None
    if module is not None:

        def save(directory):
            tf.saved_model.save(module, directory, signatures={"serving_default": module.serve})
    else:
        compact = strip(model, select_inputs=select_inputs) if isinstance(model, DynHPModel) else model
        signature = None
        if batch_size is not None:
            if not getattr(compact, "inputs", None):
                raise ValueError(
                    "`batch_size` needs a model with a known input (a functional or Sequential model)."
                )
            signature = [tf.TensorSpec((int(batch_size),) + tuple(compact.inputs[0].shape[1:]), tf.float32)]

        def save(directory):
            compact.export(directory, format="tf_saved_model", verbose=False, input_signature=signature)

    def configure(converter):
        if quantization in ("dynamic", "float16", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8

    return convert_saved_model(save, path, configure)


