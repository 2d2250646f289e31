"""On-device training files: train/infer/save/restore signatures driven by TFLiteTrainer."""

import keras
import numpy as np
import pytest
from conftest import cross_entropy as _cross_entropy
from conftest import shift as _shift

from keras_dynhp import export, ondevice, retrain


def test_trainable_tflite_trains_on_new_data(trained, compact, fashion_subset, tmp_path):
    (x, y), (xt, yt) = fashion_subset
    path = ondevice.export_trainable_tflite(trained, tmp_path / "train.tflite", learning_rate=0.05)
    trainer = ondevice.TFLiteTrainer(path)
    assert trainer.checkpoint == "tensors"
    np.testing.assert_allclose(trainer.infer(xt[:300]), compact.predict(xt[:300], verbose=0), atol=1e-5)
    x_new, y_new = _shift(x[:512]), y[:512]
    x_new_test, y_new_test = _shift(xt[:500]), yt[:500]
    before = _cross_entropy(trainer.infer(x_new_test), y_new_test)
    losses = trainer.fit(x_new, y_new, epochs=3, batch_size=64, seed=0)
    after = _cross_entropy(trainer.infer(x_new_test), y_new_test)
    assert losses[-1] < losses[0]
    assert after < before - 0.1
    # the weights read back from the file are the trained ones, in Keras order
    weights = trainer.get_weights()
    assert [w.shape for w in weights] == [w.shape for w in compact.get_weights()]
    tuned = retrain.clone(compact)
    tuned.set_weights(weights)
    np.testing.assert_allclose(tuned.predict(xt[:100], verbose=0), trainer.infer(xt[:100]), atol=1e-5)


def test_trainable_tflite_save_restore_round_trip(compact, fashion_subset, tmp_path):
    (x, y), (xt, _) = fashion_subset
    path = ondevice.export_trainable_tflite(
        compact, tmp_path / "train.tflite", optimizer="adam", learning_rate=1e-3, num_trainable_last=1
    )
    trainer = ondevice.TFLiteTrainer(path)
    start = trainer.get_weights()
    trainer.train(x[:64], y[:64])
    trainer.save(tmp_path / "ckpt.npz")
    saved = trainer.infer(xt[:100])
    weights = trainer.get_weights()
    # num_trainable_last=1: only the output layer's kernel and bias moved
    assert all(np.array_equal(a, b) for a, b in zip(start[:-2], weights[:-2]))
    assert not np.array_equal(start[-2], weights[-2])
    for i in range(3):
        trainer.train(x[64 * (i + 1) : 64 * (i + 2)], y[64 * (i + 1) : 64 * (i + 2)])
    assert not np.allclose(trainer.infer(xt[:100]), saved)
    trainer.restore(tmp_path / "ckpt.npz")
    np.testing.assert_array_equal(trainer.infer(xt[:100]), saved)
    # a fresh interpreter (another app start) restores the same weights
    fresh = ondevice.TFLiteTrainer(path)
    fresh.restore(tmp_path / "ckpt.npz")
    np.testing.assert_array_equal(fresh.infer(xt[:100]), saved)


def test_file_checkpoints_need_flex(compact, fashion_subset, tmp_path):
    (x, y), (xt, _) = fashion_subset
    path = ondevice.export_trainable_tflite(compact, tmp_path / "train_file.tflite", checkpoint="file")
    trainer = ondevice.TFLiteTrainer(path)
    assert trainer.checkpoint == "file"
    trainer.train(x[:32], y[:32])  # train stays builtin-only
    before = trainer.infer(xt[:50])
    # The shipped runtimes (ai-edge-litert, TF 2.21's interpreter) link no Flex delegate: save and
    # restore refuse with a message that says so and names the remedy, and the trainer is unharmed.
    with pytest.raises(RuntimeError, match=r"'save' signature .* TensorFlow \(Flex\) ops.*Flex delegate"):
        trainer.save(tmp_path / "ckpt")
    with pytest.raises(RuntimeError, match=r"'restore' signature .* TensorFlow \(Flex\) ops"):
        trainer.restore(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()
    np.testing.assert_array_equal(trainer.infer(xt[:50]), before)
    trainer.train(x[32:64], y[32:64])  # training goes on


def test_trainable_export_rejects_bad_arguments(compact, tmp_path):
    with pytest.raises(ValueError, match="optimizer"):
        ondevice.export_trainable_tflite(compact, tmp_path / "t.tflite", optimizer="rmsprop")
    with pytest.raises(ValueError, match="num_trainable_last"):
        ondevice.export_trainable_tflite(compact, tmp_path / "t.tflite", num_trainable_last=4)
    conv = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(2, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    with pytest.raises(ValueError, match="Conv2D"):
        ondevice.export_trainable_tflite(conv, tmp_path / "t.tflite")
    export.export_tflite(compact, tmp_path / "plain.tflite")
    with pytest.raises(ValueError, match="not a trainable"):
        ondevice.TFLiteTrainer(tmp_path / "plain.tflite")
