"""Export: the gate-free compact model and LiteRT files (float, dynamic, float16, int8)."""

import keras
import numpy as np
import pytest
from conftest import keras_accuracy as _keras_accuracy

import keras_dynhp
from keras_dynhp import export, litert, ondevice, retrain


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
    return set(litert.op_names(path))


def test_calibration_samples_are_one_seeded_rule():
    x = np.arange(1000, dtype="float32").reshape(500, 2)
    a, b = export.calibration_samples(x), export.calibration_samples(x)
    assert a.shape == (300, 2) and np.array_equal(a, b)
    assert np.all(np.diff(a[:, 0]) > 0)  # a subset, in the original order
    assert export.calibration_samples(x[:10]).shape == (10, 2)
    from keras_dynhp.data import ScaledArray

    raw = np.arange(1000).reshape(500, 2).astype(np.uint8)
    np.testing.assert_array_equal(export.calibration_samples(ScaledArray(raw)),
                                  export.calibration_samples(raw / np.float32(255.0)))


def test_int8_without_gather_for_the_edge_tpu(trained, fashion_subset, tmp_path):
    (x, _), (xt, yt) = fashion_subset
    kept = export.kept_inputs(trained)
    assert len(kept) < 784  # hard pruning removed pixels, so the default file gathers them
    with_gather = export.export_tflite(trained, tmp_path / "g.tflite", quantization="int8",
                                       representative_data=x, batch_size=1)
    assert "GATHER" in _op_names(with_gather)
    path = export.export_tflite(trained, tmp_path / "fc.tflite", quantization="int8",
                                representative_data=x, batch_size=1, select_inputs=False)
    assert litert.op_names(path) == ["FULLY_CONNECTED"] * 3 + ["SOFTMAX"]
    assert litert.tensor_types(path)["input"] == [np.dtype("int8")]
    gather_free = export.strip(trained, select_inputs=False)
    assert gather_free.inputs[0].shape[-1] == len(kept)
    np.testing.assert_allclose(gather_free.predict(xt[:, kept], verbose=0),
                               trained.predict(xt, verbose=0), atol=1e-5)
    keras_acc = _keras_accuracy(trained, xt, yt)
    assert abs(litert.evaluate_tflite(path, xt[:, kept], yt) - keras_acc) <= 0.01


def test_strip_and_tflite_match_keras(fashion_subset, tmp_path):
    from keras_dynhp import export

    (x, y), (xt, yt) = fashion_subset
    model = keras_dynhp.build_mlp([300, 100], seed=0, l0_lambda=[0.05, 0.05, 0.5],
                                  droprate_init=0.7, learning_rate=3e-3)
    with pytest.raises(ValueError, match="never trained"):
        export.strip(model)
    model.fit(x, y, epochs=3, batch_size=64, mode="hp", verbose=0)
    compact = export.strip(model)
    np.testing.assert_allclose(compact.predict(xt, verbose=0), model.predict(xt, verbose=0), atol=1e-5)
    assert compact.count_params() <= model.count_params_stored()
    path = export.export_tflite(model, tmp_path / "m.tflite")
    keras_acc = float((model.predict(xt, verbose=0).argmax(1) == yt).mean())
    assert abs(litert.evaluate_tflite(path, xt, yt, batch_size=100) - keras_acc) <= 0.001


def test_model_export_litert_writes_the_compact_file(trained, fashion_subset, tmp_path):
    _, (xt, yt) = fashion_subset
    path = trained.export(str(tmp_path / "m.tflite"), format="litert")
    assert path == str(tmp_path / "m.tflite")
    assert keras_dynhp.accuracy(path, xt[:500], yt[:500]) == pytest.approx(
        keras_dynhp.accuracy(trained, xt[:500], yt[:500]), abs=0.002)


def test_gather_inputs_is_an_exact_gather_of_builtin_layers():
    rng = np.random.default_rng(0)
    indices = np.sort(rng.choice(50, 17, replace=False))
    gather = export.gather_inputs(50, indices)
    x = rng.normal(size=(4, 50)).astype("float32")
    np.testing.assert_array_equal(np.asarray(gather(x)), x[:, indices])
    assert not gather.weights
    assert all(type(layer).__module__.startswith("keras.") for layer in gather.layers)
    assert export._gather_indices(gather)[1].tolist() == indices.tolist()  # what dense_stack reads back
    for bad in ([3, 2], [], [0, 50], [1, 1]):
        with pytest.raises(ValueError, match="sorted, distinct"):
            export.gather_inputs(50, bad)


def test_compact_keras_file_loads_without_keras_dynhp(compact, fashion_subset, tmp_path):
    import subprocess
    import sys

    _, (xt, _) = fashion_subset
    assert compact.inputs[0].shape[-1] == 784 and len(compact.layers) > 2  # a gather is in it
    path = tmp_path / "compact.keras"
    compact.save(path)
    np.save(tmp_path / "x.npy", xt[:64])
    code = (
        "import sys, keras, numpy as np\n"
        f"m = keras.saving.load_model({str(path)!r})\n"
        f"np.save({str(tmp_path / 'p.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))\n"
        "assert not any(name.startswith('keras_dynhp') for name in sys.modules), 'keras_dynhp was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), compact.predict(xt[:64], verbose=0), atol=1e-6)


def test_strip_without_pruned_inputs_has_no_gather(fashion_subset):
    (x, y), _ = fashion_subset
    model = keras_dynhp.build_mlp([16], seed=0)
    model.fit(x[:256], y[:256], epochs=1, batch_size=64, mode="sp", verbose=0)
    plain = export.strip(model)
    assert [type(layer) for layer in plain.layers] == [keras.layers.InputLayer, keras.layers.Dense,
                                                        keras.layers.Dense]


def test_cnn_strips_to_plain_keras_and_loads_without_keras_dynhp(trained_cnn, mnist_images, tmp_path):
    _, (xt, _) = mnist_images
    compact = export.strip(trained_cnn)
    widths = trained_cnn.layer_widths()
    assert widths[2][0] < widths[1][1] * 16  # single flattened features pruned: a gather after Flatten
    assert "feature_select_2" in [layer.name for layer in compact.layers]
    kinds = {type(layer).__name__ for layer in compact.layers}
    assert kinds <= {"InputLayer", "Conv2D", "MaxPooling2D", "Flatten", "Functional", "Dense"}
    assert compact.count_params() == trained_cnn.delivered_bytes() // 4
    np.testing.assert_allclose(compact.predict(xt[:200], verbose=0), trained_cnn.predict(xt[:200], verbose=0),
                               atol=1e-5)
    path = tmp_path / "cnn.keras"
    compact.save(path)
    import subprocess
    import sys
    code = ("import keras, numpy as np, sys; m = keras.saving.load_model(sys.argv[1]); "
            "print(m.count_params(), 'keras_dynhp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == [str(compact.count_params()), "False"]


def test_cnn_litert_float_and_int8_match_keras(trained_cnn, mnist_images, tmp_path):
    (x, _), (xt, yt) = mnist_images
    float_path = export.export_tflite(trained_cnn, str(tmp_path / "cnn.tflite"))
    assert "CONV_2D" in litert.op_names(float_path) and "MAX_POOL_2D" in litert.op_names(float_path)
    keras_probs = trained_cnn.predict(xt, verbose=0)
    np.testing.assert_allclose(litert.predict_tflite(float_path, xt[:100], batch_size=50), keras_probs[:100],
                               atol=1e-4)
    int8_path = export.export_tflite(trained_cnn, str(tmp_path / "cnn_int8.tflite"), quantization="int8",
                                     representative_data=x)
    assert not litert.non_integer_tensors(int8_path)
    keras_acc = float((keras_probs.argmax(1) == yt).mean())
    int8_acc = float((litert.predict_tflite(int8_path, xt, batch_size=100).argmax(1) == yt).mean())
    assert keras_acc > 0.8  # it learned (3 epochs on 3,000 images, heavily pruned)
    assert abs(int8_acc - keras_acc) <= 0.01


def test_pruned_image_channels_strip_to_a_fixed_1x1_selection(tmp_path):
    """RGB inputs with gated channels: a channel with a closed gate leaves the compact model's
    input through a 0/1 1x1 Conv2D (built-in, exact), in Keras and in the LiteRT file."""
    from keras_dynhp.layers import LOG_ALPHA_RANGE, L0Conv2D, L0Dense

    model = keras_dynhp.DynHPModel(
        [L0Conv2D(4, 3, activation="relu", seed=0), L0Dense(3, activation="softmax", seed=1)],
        input_shape=(8, 8, 3), connectors=[[keras.layers.Flatten()]])
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 3)).astype("float32")
    model.fit(x, rng.integers(0, 3, 16), epochs=1, batch_size=8, verbose=0)
    model.gated_layers[0].log_alpha.assign(np.array([3.0, LOG_ALPHA_RANGE[0], 3.0], "float32"))
    assert export.kept_inputs(model).tolist() == [0, 2]
    compact = export.strip(model)
    assert isinstance(compact.layers[1], keras.layers.Conv2D) and compact.layers[1].name == "feature_select"
    np.testing.assert_allclose(compact.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    path = export.export_tflite(model, str(tmp_path / "rgb.tflite"))
    np.testing.assert_allclose(litert.predict_tflite(path, x, batch_size=8), model.predict(x, verbose=0),
                               atol=1e-5)
