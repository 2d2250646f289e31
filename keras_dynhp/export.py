"""Export: a gate-free compact Keras model and LiteRT (TFLite) files.

:func:`strip` folds the deterministic inference gates into the kernels
(`W'_j = z_j * W_j`, row j scaled by gate j), removes units whose gate is exactly
0 and keeps the surviving input pixels with a fixed gather in front. Its
predictions equal the gated model's inference predictions.

:func:`export_tflite` writes the compact model as a LiteRT file: float32,
dynamic-range, float16 or full-integer int8 (int8 input, output and ops, the
form the Edge TPU compiler takes; `edgetpu_compiler` itself runs outside this
project). :func:`evaluate_tflite`, :func:`predict_tflite` and
:func:`benchmark_tflite` run such files with the `ai-edge-litert` interpreter;
:func:`non_integer_tensors` checks a file is full-integer. Trainable files
(on-device re-training) are in :mod:`keras_dynhp.ondevice`.
"""

import os

import keras
import numpy as np
from keras import ops

from keras_dynhp._io import write_bytes
from keras_dynhp.layers import FeatureSelect


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
    keep = ops.convert_to_numpy(model.gated_layers[0].inference_gates()) > 0
    if not keep.any():
        keep[0] = True
    indices = model.feature_select.indices
    indices = np.arange(model.input_dim) if indices is None else np.asarray(indices)
    return indices[keep].astype("int32")


def strip(model, name=None, select_inputs=True):
    """Returns a plain Keras model without gates, with zero-gated units removed.

    Args:
        model: A trained :class:`~keras_dynhp.models.DynHPModel`.
        name: Name of the new model (default: `<model name>_compact`).
        select_inputs: True: the model takes all `input_dim` features and picks
            the kept ones with a fixed gather (`FeatureSelect`). False: no gather;
            the model takes only the kept features, `x[:, kept_inputs(model)]`
            (for accelerators without a GATHER op, such as the Edge TPU).

    Returns:
        A functional `keras.Model`: FeatureSelect (if `select_inputs`) then
        `keras.layers.Dense` layers.

    Raises:
        ValueError: If the model is not a trained DynHPModel.
    """
    _check_model(model)
    layers = model.gated_layers
    gates = [ops.convert_to_numpy(layer.inference_gates()) for layer in layers]
    keep = [g > 0 for g in gates]
    for k in keep:
        if not k.any():  # keep one unit rather than an empty layer
            k[0] = True
    indices = kept_inputs(model)
    if select_inputs:
        inputs = keras.Input((model.input_dim,), name="pixels")
        x = FeatureSelect(model.input_dim, indices.tolist(), name="feature_select")(inputs)
    else:
        inputs = keras.Input((len(indices),), name="selected_pixels")
        x = inputs
    for i, layer in enumerate(layers):
        kernel = ops.convert_to_numpy(layer.kernel) * gates[i][:, None]
        kernel = kernel[keep[i]]
        bias = ops.convert_to_numpy(layer.bias) if layer.use_bias else None
        if i + 1 < len(layers):
            kernel = kernel[:, keep[i + 1]]
            bias = None if bias is None else bias[keep[i + 1]]
        dense = keras.layers.Dense(
            kernel.shape[1], activation=layer.activation, use_bias=bias is not None, name=f"dense_{i}"
        )
        x = dense(x)
        dense.set_weights([kernel] + ([bias] if bias is not None else []))
    return keras.Model(inputs, x, name=name or f"{model.name}_compact")


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


def _input_width(model):
    from keras_dynhp.models import DynHPModel

    if isinstance(model, DynHPModel):
        return model.input_dim
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else None
    return None if shape is None else shape[-1]


def _representative_dataset(representative_data, width):
    data = np.asarray(representative_data)
    if data.ndim != 2 or (width is not None and data.shape[1] != width) or len(data) == 0:
        raise ValueError(
            f"`representative_data` must be a non-empty array of model inputs of shape (n, {width}); "
            f"received shape {data.shape}."
        )
    data = data.astype("float32", copy=False)
    if not np.isfinite(data).all():
        raise ValueError("`representative_data` contains NaN or infinite values.")
    if len(data) > MAX_CALIBRATION_SAMPLES:
        idx = np.sort(np.random.default_rng(0).choice(len(data), MAX_CALIBRATION_SAMPLES, replace=False))
        data = data[idx]

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
    import shutil
    import tempfile

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
        width = _input_width(model)
        if isinstance(model, DynHPModel) and not select_inputs:
            kept = kept_inputs(model)
            data = np.asarray(representative_data)
            if data.ndim == 2 and data.shape[1] == model.input_dim:
                representative_data = data[:, kept]
            width = len(kept)
        representative = _representative_dataset(representative_data, width)

    compact = strip(model, select_inputs=select_inputs) if isinstance(model, DynHPModel) else model
    saved_model_dir = tempfile.mkdtemp(prefix="keras_dynhp_export_")
    try:
        signature = None
        if batch_size is not None:
            if not getattr(compact, "inputs", None):
                raise ValueError(
                    "`batch_size` needs a model with a known input (a functional or Sequential model)."
                )
            signature = [tf.TensorSpec((int(batch_size),) + tuple(compact.inputs[0].shape[1:]), tf.float32)]
        compact.export(saved_model_dir, format="tf_saved_model", verbose=False, input_signature=signature)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        if quantization == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        data = converter.convert()
    finally:
        shutil.rmtree(saved_model_dir, ignore_errors=True)
    write_bytes(path, data)
    return path


def interpreter_class():
    """The LiteRT `Interpreter` class (ai-edge-litert; TensorFlow's as a fallback)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - fallback when the LiteRT wheel is absent
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


def _interpreter(path, num_threads=1):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such .tflite file: {os.fspath(path)!r}.")
    return interpreter_class()(model_path=os.fspath(path), num_threads=num_threads)


def quantize_input(x, detail):
    """Casts float inputs to an input tensor's dtype, quantizing when it is integer.

    Args:
        x: Float array.
        detail: The interpreter's input detail (a dict with `dtype`, `quantization`).

    Returns:
        An array of the tensor's dtype: `round(x / scale) + zero_point`, clipped to
        the integer range, for int8/uint8 inputs; `x` cast otherwise.
    """
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, "float32") / scale) + zero_point
        return np.clip(q, info.min, info.max).astype(dtype)
    return np.asarray(x).astype(dtype)


def dequantize_output(q, detail):
    """Float values of an (int8/uint8 quantized) output tensor; float outputs pass through."""
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return (q.astype("float32") - zero_point) * scale
    return q


def predict_tflite(path, x, batch_size=1, num_threads=1):
    """Float outputs of a single-input, single-output `.tflite` file (LiteRT interpreter).

    Integer (full-int8) files are fed quantized inputs and their outputs are
    dequantized with the tensors' scale and zero point.

    Args:
        path: The `.tflite` file.
        x: Float inputs (n, features).
        batch_size: Examples per invocation (the last batch may be smaller).
        num_threads: Interpreter threads.

    Returns:
        A float32 array of outputs, one row per example.
    """
    x = np.asarray(x)
    interpreter = _interpreter(path, num_threads)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    outputs, current = [], None
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        if len(batch) != current:
            interpreter.resize_tensor_input(inp["index"], (len(batch),) + tuple(x.shape[1:]))
            interpreter.allocate_tensors()
            current = len(batch)
        interpreter.set_tensor(inp["index"], quantize_input(batch, inp))
        interpreter.invoke()
        outputs.append(dequantize_output(interpreter.get_tensor(out["index"]), out).astype("float32"))
    return np.concatenate(outputs) if outputs else np.zeros((0,), "float32")


def evaluate_tflite(path, x, y, batch_size=1):
    """Accuracy of a `.tflite` classifier with the LiteRT interpreter (ai-edge-litert).

    Handles float and full-integer files (inputs are quantized with the input
    tensor's scale and zero point). Every example counts: the last batch may be
    smaller.

    Args:
        path: The `.tflite` file.
        x: Float inputs (n, features).
        y: Integer labels.
        batch_size: Examples per invocation.

    Returns:
        Accuracy in [0, 1].
    """
    y = np.asarray(y)
    if len(y) == 0:
        return 0.0
    pred = predict_tflite(path, x, batch_size=batch_size).argmax(-1)
    return float((pred == y).mean())


def tensor_types(path):
    """Dtypes of a `.tflite` file's tensors, for checking full-integer files.

    Args:
        path: The `.tflite` file.

    Returns:
        A dict with `input` and `output` (lists of NumPy dtypes) and `tensors`
        (a list of `(name, dtype)` for every tensor of the graph).
    """
    interpreter = _interpreter(path)
    return {
        "input": [np.dtype(d["dtype"]) for d in interpreter.get_input_details()],
        "output": [np.dtype(d["dtype"]) for d in interpreter.get_output_details()],
        "tensors": [(d["name"], np.dtype(d["dtype"])) for d in interpreter.get_tensor_details()],
    }


def non_integer_tensors(path):
    """Tensors that keep a file from being full-integer (Edge-TPU-compiler-ready).

    A full-integer file has int8 inputs and outputs and only int8 tensors, plus
    int32 ones (biases, gather indices, shapes).

    Args:
        path: The `.tflite` file.

    Returns:
        A list of `(name, dtype)`; empty for a full-integer file.
    """
    types = tensor_types(path)
    bad = [(f"input {i}", t) for i, t in enumerate(types["input"]) if t != np.int8]
    bad += [(f"output {i}", t) for i, t in enumerate(types["output"]) if t != np.int8]
    bad += [(n, t) for n, t in types["tensors"] if t not in (np.dtype("int8"), np.dtype("int32"))]
    return bad


def benchmark_tflite(path, x, runs=1000, warmup=100, num_threads=1):
    """Per-sample latency of a `.tflite` classifier: batch 1, one interpreter.

    Each timed call sets one example (quantized for integer files) and invokes
    the interpreter; the examples cycle through `x`.

    Args:
        path: The `.tflite` file.
        x: Float inputs (n, features).
        runs: Timed invocations.
        warmup: Untimed invocations first.
        num_threads: Interpreter threads.

    Returns:
        A dict: `median_us`, `p90_us`, `mean_us` (microseconds per sample),
        `runs`, `file_bytes`.
    """
    import time

    if runs < 1 or warmup < 0:
        raise ValueError(f"`runs` must be >= 1 and `warmup` >= 0; received {runs} and {warmup}.")
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("`x` must hold at least one example.")
    interpreter = _interpreter(path, num_threads)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], (1,) + tuple(x.shape[1:]))
    interpreter.allocate_tensors()
    samples = [quantize_input(x[i : i + 1], inp) for i in range(min(len(x), 256))]
    index = inp["index"]
    times = np.empty(runs)
    for i in range(warmup + runs):
        sample = samples[i % len(samples)]
        start = time.perf_counter()
        interpreter.set_tensor(index, sample)
        interpreter.invoke()
        if i >= warmup:
            times[i - warmup] = time.perf_counter() - start
    times *= 1e6
    return {
        "median_us": float(np.median(times)),
        "p90_us": float(np.percentile(times, 90)),
        "mean_us": float(times.mean()),
        "runs": int(runs),
        "file_bytes": os.path.getsize(path),
    }
