"""Running LiteRT (TFLite) files: the interpreter, predictions, accuracy, latency, tensor types, ops.

Files are written by :mod:`keras_dynhp.export` (inference) and
:mod:`keras_dynhp.ondevice` (training); this module only reads and runs them,
with the `ai-edge-litert` interpreter (TensorFlow's as a fallback). Integer
(full-int8) files are fed quantized inputs and their outputs dequantized.
"""

import os

import numpy as np


def interpreter_class():
    """The LiteRT `Interpreter` class (ai-edge-litert; TensorFlow's as a fallback)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - fallback when the LiteRT wheel is absent
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


def load_interpreter(path, num_threads=1):
    """A LiteRT interpreter for a `.tflite` file (FileNotFoundError if there is none).

    Args:
        path: The `.tflite` file.
        num_threads: Interpreter threads.

    Returns:
        The interpreter (tensors not yet allocated).
    """
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
    interpreter = load_interpreter(path, num_threads)
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
    interpreter = load_interpreter(path)
    return {
        "input": [np.dtype(d["dtype"]) for d in interpreter.get_input_details()],
        "output": [np.dtype(d["dtype"]) for d in interpreter.get_output_details()],
        "tensors": [(d["name"], np.dtype(d["dtype"])) for d in interpreter.get_tensor_details()],
    }


def op_names(path):
    """The operators of a `.tflite` file's graph, in execution order.

    Args:
        path: The `.tflite` file.

    Returns:
        A list of op names, e.g. `["GATHER", "FULLY_CONNECTED", ..., "SOFTMAX"]`
        (the nodes a runtime delegate such as XNNPACK adds are not ops of the file).
    """
    interpreter = load_interpreter(path)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # the interpreter's only op listing
    return [op["op_name"] for op in ops if op["op_name"] != "DELEGATE"]


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
    interpreter = load_interpreter(path, num_threads)
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
