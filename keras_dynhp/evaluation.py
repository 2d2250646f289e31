"""Accuracy of a classifier, Keras model or LiteRT file: the project's one accuracy helper."""

import os

import numpy as np

EVAL_BATCH = 1000  # batch of every Keras accuracy computation (so that all figures agree)


def accuracy(model, x, y, batch_size=EVAL_BATCH):
    """Top-1 accuracy in [0, 1] of a Keras classifier or a `.tflite` file on arrays.

    Args:
        model: A Keras model (argmax of `predict`), or the path of a `.tflite`
            file (run with :func:`keras_dynhp.litert.evaluate_tflite`).
        x: Inputs, one row per example.
        y: Integer labels.
        batch_size: Examples per `predict` call or interpreter invocation.

    Returns:
        The fraction of examples whose argmax equals the label (every example
        counts; NaN for no examples).

    Example:
        >>> accuracy(model, x_test, y_test)   # doctest: +SKIP
        0.8812
    """
    y = np.asarray(y)
    if len(y) == 0:
        return float("nan")
    if isinstance(model, (str, os.PathLike)):
        from keras_dynhp.litert import predict_tflite

        pred = predict_tflite(model, x, batch_size=batch_size)
    else:
        pred = model.predict(np.asarray(x, "float32"), batch_size=batch_size, verbose=0)
    return float((np.argmax(pred, axis=-1) == y).mean())
