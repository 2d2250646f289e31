"""Export: a gate-free compact Keras model and LiteRT (TFLite) files.

:func:`strip` folds the deterministic inference gates into the kernels
(`W'_j = z_j * W_j`, row j scaled by gate j), removes units whose gate is exactly
0 and keeps the surviving input pixels with a fixed gather in front. Its
predictions equal the gated model's inference predictions.
"""

import os

import keras
import numpy as np
from keras import ops

from keras_dynhp.layers import FeatureSelect


def _check_model(model):
    from keras_dynhp.models import DynHPModel

    if not isinstance(model, DynHPModel):
        raise ValueError(f"Expected a DynHPModel; received {type(model).__name__}.")
    if not model.built or model.optimizer is None or int(model.optimizer.iterations) == 0:
        raise ValueError(
            "This model was never trained: fit it (or load a trained .keras file) before exporting."
        )


def strip(model, name=None):
    """Returns a plain Keras model without gates, with zero-gated units removed.

    Args:
        model: A trained :class:`~keras_dynhp.models.DynHPModel`.
        name: Name of the new model (default: `<model name>_compact`).

    Returns:
        A functional `keras.Model`: FeatureSelect (if pixels were pruned) then
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
    inputs = keras.Input((model.input_dim,), name="pixels")
    indices = model.feature_select.indices
    indices = np.arange(model.input_dim) if indices is None else np.asarray(indices)
    indices = indices[keep[0]]
    x = FeatureSelect(model.input_dim, indices.tolist(), name="feature_select")(inputs)
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


def export_tflite(model, path, quantization=None, representative_data=None):
    """Writes a LiteRT (TFLite) file of the compact model.

    Args:
        model: A trained DynHPModel (stripped first) or a plain Keras model.
        path: Output `.tflite` path.
        quantization: None (float32) or "dynamic" (dynamic-range int8 weights) or
            "float16".
        representative_data: Unused for the float modes (full int8 comes later).

    Returns:
        The path written.
    """
    import tensorflow as tf

    if quantization not in (None, "dynamic", "float16"):
        raise ValueError(
            f"`quantization` must be None, 'dynamic' or 'float16'; received {quantization!r}."
        )
    from keras_dynhp.models import DynHPModel

    import tempfile

    compact = strip(model) if isinstance(model, DynHPModel) else model
    saved_model_dir = tempfile.mkdtemp(prefix="keras_dynhp_export_")
    compact.export(saved_model_dir, format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    data = converter.convert()
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    import shutil

    shutil.rmtree(saved_model_dir, ignore_errors=True)
    return path


def evaluate_tflite(path, x, y, batch_size=1):
    """Accuracy of a `.tflite` classifier with the LiteRT interpreter (ai-edge-litert).

    Args:
        path: The `.tflite` file.
        x: Float inputs (n, features).
        y: Integer labels.
        batch_size: Examples per invocation.

    Returns:
        Accuracy in [0, 1].
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - fallback when the LiteRT wheel is absent
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=os.fspath(path), num_threads=1)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], (batch_size, x.shape[1]))
    interpreter.allocate_tensors()
    correct = 0
    n = len(x) - len(x) % batch_size
    for start in range(0, n, batch_size):
        interpreter.set_tensor(inp["index"], x[start : start + batch_size].astype(inp["dtype"]))
        interpreter.invoke()
        pred = interpreter.get_tensor(out["index"]).argmax(-1)
        correct += int((pred == y[start : start + batch_size]).sum())
    return correct / max(n, 1)
