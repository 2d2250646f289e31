"""Edge export: compact model, float/dynamic/int8 LiteRT files, on-device training, re-training."""

import keras
import numpy as np
import pytest

import keras_dynhp
from keras_dynhp import export, litert, ondevice, retrain


@pytest.fixture(scope="module")
def trained(fashion_subset):
    """One hard-pruned DynHPModel shared by the tests of this module (about 3 s)."""
    (x, y), _ = fashion_subset
    model = keras_dynhp.build_mlp(
        [300, 100], seed=0, l0_lambda=[0.05, 0.05, 0.5], droprate_init=0.7, learning_rate=3e-3
    )
    model.fit(x, y, epochs=3, batch_size=64, mode="hp", verbose=0, seed=0)
    return model


@pytest.fixture(scope="module")
def compact(trained):
    return export.strip(trained)


def _shift(x, pixels=3):
    """Fashion-MNIST images moved right by `pixels` ("new data" from a shifted distribution)."""
    return np.roll(x.reshape(-1, 28, 28), pixels, axis=2).reshape(len(x), 784)


def _keras_accuracy(model, x, y):
    return float((model.predict(x, batch_size=1000, verbose=0).argmax(1) == y).mean())


def _cross_entropy(probs, y):
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)).mean())


def test_compact_equals_gated_model_and_has_the_pruned_size(trained, compact, fashion_subset):
    _, (xt, _) = fashion_subset
    arch = trained.architecture()
    assert arch[0] < 784  # the fixture really pruned something
    np.testing.assert_allclose(compact.predict(xt, verbose=0), trained.predict(xt, verbose=0), atol=1e-5)
    expected = sum(a * b + b for a, b in zip(arch[:-1], arch[1:]))
    assert compact.count_params() == expected == trained.count_params_stored()
    dense = [layer for layer in compact.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.kernel.shape[0] for d in dense] + [dense[-1].units] == arch


def test_float_tflite_matches_keras(trained, fashion_subset, tmp_path):
    _, (xt, yt) = fashion_subset
    path = export.export_tflite(trained, tmp_path / "float.tflite")
    keras_acc = _keras_accuracy(trained, xt, yt)
    assert abs(litert.evaluate_tflite(path, xt, yt, batch_size=128) - keras_acc) <= 0.001
    # batch 128 leaves a remainder of 80 examples: every example must count
    probs = litert.predict_tflite(path, xt, batch_size=128)
    assert probs.shape == (len(xt), 10)
    np.testing.assert_allclose(probs, trained.predict(xt, verbose=0), atol=1e-5)


@pytest.mark.parametrize("quantization", ["dynamic", "int8"])
def test_quantized_tflite_within_one_point(trained, fashion_subset, tmp_path, quantization):
    (x, _), (xt, yt) = fashion_subset
    path = export.export_tflite(
        trained, tmp_path / f"{quantization}.tflite", quantization=quantization, representative_data=x
    )
    keras_acc = _keras_accuracy(trained, xt, yt)
    assert abs(litert.evaluate_tflite(path, xt, yt, batch_size=100) - keras_acc) <= 0.01


def test_int8_file_is_full_integer(trained, fashion_subset, tmp_path):
    (x, _), (xt, _) = fashion_subset
    float_path = export.export_tflite(trained, tmp_path / "float.tflite")
    assert litert.non_integer_tensors(float_path)  # the check can fail
    path = export.export_tflite(
        trained, tmp_path / "int8.tflite", quantization="int8", representative_data=x, batch_size=1
    )
    types = litert.tensor_types(path)
    assert types["input"] == [np.dtype("int8")] and types["output"] == [np.dtype("int8")]
    assert litert.non_integer_tensors(path) == []
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    assert list(inp["shape_signature"]) == [1, 784]  # static shape for the Edge TPU compiler
    assert inp["quantization"][0] > 0
    # the dequantized int8 outputs are probabilities close to the float model's
    probs = litert.predict_tflite(path, xt[:200])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=0.05)
    assert np.abs(probs - trained.predict(xt[:200], verbose=0)).max() < 0.15


def test_export_errors(trained, fashion_subset, tmp_path):
    (x, _), _ = fashion_subset
    with pytest.raises(ValueError, match="representative_data"):
        export.export_tflite(trained, tmp_path / "a.tflite", quantization="int8")
    with pytest.raises(ValueError, match=r"shape \(n, 784\)"):
        export.export_tflite(
            trained, tmp_path / "a.tflite", quantization="int8", representative_data=x[:, :10]
        )
    with pytest.raises(ValueError, match="quantization"):
        export.export_tflite(trained, tmp_path / "a.tflite", quantization="int4")
    untrained = keras_dynhp.build_mlp([8], input_dim=784)
    for fn in (export.export_tflite, ondevice.export_trainable_tflite):
        with pytest.raises(ValueError, match="never trained"):
            fn(untrained, tmp_path / "a.tflite")
    unbuilt = keras.Sequential([keras.layers.Dense(10, activation="softmax")])
    with pytest.raises(ValueError, match="never built"):
        export.export_tflite(unbuilt, tmp_path / "a.tflite")
    with pytest.raises(ValueError, match="never built"):
        retrain.retrain(unbuilt, x[:10], np.zeros(10, "int32"))
    assert not (tmp_path / "a.tflite").exists()


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
    try:
        trainer.save(tmp_path / "ckpt")
    except RuntimeError as e:  # no Flex delegate in ai-edge-litert / TF 2.21 (see ondevice docstring)
        assert "Flex" in str(e)
    else:  # a runtime with Flex: the checkpoint must round-trip
        saved = trainer.infer(xt[:50])
        trainer.train(x[32:64], y[32:64])
        trainer.restore(tmp_path / "ckpt")
        np.testing.assert_array_equal(trainer.infer(xt[:50]), saved)


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


def test_retrain_strategies(compact, fashion_subset):
    (x, y), (xt, yt) = fashion_subset
    new, new_test = (_shift(x[:1500]), y[:1500]), (_shift(xt[:1000]), yt[:1000])
    original_test = (xt[1000:], yt[1000:])
    before = compact.get_weights()
    rows = retrain.compare_strategies(
        compact,
        new,
        new_test,
        original_test,
        epochs=2,
        batch_size=32,
        replay_data=(x[1500:], y[1500:]),
        replay_size=300,
        seed=0,
    )
    assert [r["strategy"] for r in rows] == ["none", "all", "last", "replay"]
    for r in rows:
        assert set(r) == {"strategy", "new_accuracy", "original_accuracy", "seconds", "trainable_params"}
        assert 0.0 <= r["new_accuracy"] <= 1.0 and 0.0 <= r["original_accuracy"] <= 1.0
    by = {r["strategy"]: r for r in rows}
    assert by["none"]["original_accuracy"] == pytest.approx(_keras_accuracy(compact, *original_test))
    assert by["all"]["new_accuracy"] > by["none"]["new_accuracy"] + 0.05
    assert by["last"]["trainable_params"] == int(np.prod(before[-2].shape)) + before[-1].size
    assert by["all"]["trainable_params"] == compact.count_params()
    # the input model is untouched
    assert all(np.array_equal(a, b) for a, b in zip(before, compact.get_weights()))
    # "last" trains only the last layer
    last = retrain.retrain(compact, *new, strategy="last", epochs=1)
    after = last.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before[:-2], after[:-2]))
    assert not np.array_equal(before[-1], after[-1])


def test_retrain_errors(compact, fashion_subset):
    (x, y), _ = fashion_subset
    with pytest.raises(ValueError, match="strategy"):
        retrain.retrain(compact, x[:10], y[:10], strategy="everything")
    with pytest.raises(ValueError, match="replay_data"):
        retrain.retrain(compact, x[:10], y[:10], strategy="replay")
    with pytest.raises(ValueError, match="replay_data"):
        retrain.compare_strategies(compact, (x[:10], y[:10]), (x[:10], y[:10]), (x[:10], y[:10]))
    with pytest.raises(ValueError, match="num_trainable_last"):
        retrain.retrain(compact, x[:10], y[:10], strategy="last", num_trainable_last=0)
    with pytest.raises(ValueError, match=r"shape \(n, 784\)"):
        retrain.retrain(compact, x[:10, :5], y[:10])


def test_keras_file_round_trip_and_scripts(trained, fashion_subset, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    _, (xt, yt) = fashion_subset
    keras_path = tmp_path / "model.keras"
    trained.save(keras_path)
    loaded = keras.models.load_model(keras_path)
    assert isinstance(loaded, keras_dynhp.DynHPModel) and loaded.architecture() == trained.architecture()
    np.testing.assert_allclose(
        loaded.predict(xt[:200], verbose=0), trained.predict(xt[:200], verbose=0), atol=1e-6
    )

    scripts = Path(__file__).resolve().parent.parent / "tflite"

    def script(name, *args):
        return subprocess.run(
            [sys.executable, str(scripts / name), *map(str, args)],
            capture_output=True,
            check=False,
            text=True,
            timeout=120,
        )

    missing = script("convert.py", tmp_path / "missing.keras", tmp_path / "m.tflite")
    assert (
        missing.returncode == 1
        and missing.stderr.strip() == f"convert.py: error: no such file: {tmp_path / 'missing.keras'}"
    )
    wrong = script("evaluate.py", keras_path)
    assert (
        wrong.returncode == 1
        and "Traceback" not in wrong.stderr
        and "expected a .tflite file" in wrong.stderr
    )
    out = tmp_path / "m_int8.tflite"
    done = script("convert.py", keras_path, out, "--quantization", "int8", "--batch-size", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "full-integer: yes" in done.stdout and litert.non_integer_tensors(out) == []
    assert abs(litert.evaluate_tflite(out, xt, yt, batch_size=100) - _keras_accuracy(trained, xt, yt)) <= 0.01


def _op_names(path):
    interpreter = litert.load_interpreter(path)
    interpreter.allocate_tensors()
    return {op["op_name"] for op in interpreter._get_ops_details()}


def test_int8_without_gather_for_the_edge_tpu(trained, fashion_subset, tmp_path):
    (x, _), (xt, yt) = fashion_subset
    kept = export.kept_inputs(trained)
    assert len(kept) < 784  # hard pruning removed pixels, so the default file gathers them
    with_gather = export.export_tflite(trained, tmp_path / "g.tflite", quantization="int8",
                                       representative_data=x, batch_size=1)
    assert "GATHER" in _op_names(with_gather)
    path = export.export_tflite(trained, tmp_path / "fc.tflite", quantization="int8",
                                representative_data=x, batch_size=1, select_inputs=False)
    assert "GATHER" not in _op_names(path)
    assert "FULLY_CONNECTED" in _op_names(path)
    assert litert.tensor_types(path)["input"] == [np.dtype("int8")]
    gather_free = export.strip(trained, select_inputs=False)
    assert gather_free.inputs[0].shape[-1] == len(kept)
    np.testing.assert_allclose(gather_free.predict(xt[:, kept], verbose=0),
                               trained.predict(xt, verbose=0), atol=1e-5)
    keras_acc = _keras_accuracy(trained, xt, yt)
    assert abs(litert.evaluate_tflite(path, xt[:, kept], yt) - keras_acc) <= 0.01
