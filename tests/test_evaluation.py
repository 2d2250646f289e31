"""The one accuracy helper, on Keras models and LiteRT files."""

import math

import numpy as np

from keras_dynhp import export
from keras_dynhp.evaluation import accuracy


def test_accuracy_of_keras_model_and_tflite_file_agree(trained, fashion_subset, tmp_path):
    _, (xt, yt) = fashion_subset
    expected = float((trained.predict(xt, verbose=0).argmax(1) == yt).mean())
    assert accuracy(trained, xt, yt) == expected
    path = export.export_tflite(trained, tmp_path / "m.tflite")
    assert abs(accuracy(str(path), xt, yt) - expected) <= 0.001
    assert abs(accuracy(tmp_path / "m.tflite", xt[:7], yt[:7]) - accuracy(trained, xt[:7], yt[:7])) <= 1e-9


def test_accuracy_counts_every_example_and_empty_is_nan(trained, fashion_subset):
    _, (xt, yt) = fashion_subset
    pred = trained.predict(xt[:3], verbose=0).argmax(1)
    y = np.array([pred[0], pred[1], (pred[2] + 1) % 10])
    assert accuracy(trained, xt[:3], y) == 2 / 3
    assert math.isnan(accuracy(trained, xt[:0], yt[:0]))
