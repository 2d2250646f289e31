import keras
import numpy as np
import pytest

import keras_dynhp
from keras_dynhp import surgery
from keras_dynhp.layers import LOG_ALPHA_RANGE


def _model(seed=0, **kw):
    return keras_dynhp.build_mlp([12, 8], input_dim=20, num_classes=4, seed=seed, **kw)


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 20)).astype("float32"), rng.integers(0, 4, n)


def _set_stats(layer, rates):
    layer.gate_observations.assign(100.0)
    layer.gate_active_count.assign(np.asarray(rates, "float32") * 100.0)


def test_surgery_is_exact_when_removed_gates_are_zero():
    model = _model()
    x, _ = _data()
    rng = np.random.default_rng(1)
    masks = []
    for layer in model.gated_layers:
        keep = rng.random(layer.input_dim) > 0.4
        keep[0] = True
        la = np.where(keep, rng.uniform(-1, 3, layer.input_dim), LOG_ALPHA_RANGE[0]).astype("float32")
        layer.log_alpha.assign(la)  # removed gates: inference gate exactly 0
        assert np.all(np.asarray(layer.inference_gates())[~keep] == 0.0)
        _set_stats(layer, keep.astype(float))
        masks.append(keep)
    before = model.predict(x, verbose=0)
    report = surgery.prune_model(model, gamma=0.5)
    assert report["units_after"] == [int(m.sum()) for m in masks]
    assert model.feature_select.indices == np.flatnonzero(masks[0]).tolist()
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-5)
    # weight count equals an independent count of the rebuilt kernels and biases
    independent = sum(int(np.prod(w.shape)) for w in model.weights if w.name in ("kernel", "bias"))
    assert model.count_params_stored() == independent
    widths = model.architecture()
    assert independent == sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def test_optimizer_moments_are_sliced_not_reset():
    model = _model()
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    old = {v.path: v.numpy() for v in model.optimizer.variables}
    iterations = int(model.optimizer.iterations)
    keeps = []
    for layer in model.gated_layers:
        keep = np.ones(layer.input_dim, bool)
        keep[[1, 3]] = False
        _set_stats(layer, keep.astype(float))
        keeps.append(np.flatnonzero(keep))
    surgery.prune_model(model, gamma=0.5)
    new = {v.path: v.numpy() for v in model.optimizer.variables}
    assert int(model.optimizer.iterations) == iterations
    assert set(new) == set(old)
    layer_names = [layer.name for layer in model.gated_layers]
    for i, name in enumerate(layer_names):
        rows = keeps[i]
        cols = keeps[i + 1] if i + 1 < len(keeps) else slice(None)
        for slot in ("momentum", "velocity"):
            k = next(p for p in new if f"{name}_kernel_{slot}" in p)
            np.testing.assert_array_equal(new[k], old[k][rows][:, cols])
            b = next(p for p in new if f"{name}_bias_{slot}" in p)
            np.testing.assert_array_equal(new[b], old[b][cols])
            a = next(p for p in new if f"{name}_log_alpha_{slot}" in p)
            np.testing.assert_array_equal(new[a], old[a][rows])
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # no "unknown variable" error


def test_min_units_respected_with_huge_lambda():
    model = _model(l0_lambda=1e4, learning_rate=0.05, penalty="louizos")  # the weighting lambda was set for
    x, y = _data(256)
    history = model.fit(x, y, epochs=4, batch_size=16, mode="hp", min_units=3, verbose=0)
    sizes = np.array([history.history[f"units_{i}"] for i in range(3)])
    assert np.all(sizes >= 3)
    assert np.all(np.diff(sizes, axis=1) <= 0)  # monotonic
    assert model.units() == [3, 3, 3]


def test_pruned_model_saves_and_resumes(tmp_path):
    model = _model()
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for layer in model.gated_layers:
        _set_stats(layer, np.linspace(0, 1, layer.input_dim))
    surgery.prune_model(model, gamma=0.5)
    path = tmp_path / "pruned.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.architecture() == model.architecture()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    old = [v.numpy() for v in model.optimizer.variables]
    new = [v.numpy() for v in loaded.optimizer.variables]
    assert len(old) == len(new)
    for a, b in zip(old, new):
        np.testing.assert_array_equal(a, b)
    loaded.fit(x, y, epochs=1, batch_size=16, mode="hp", verbose=0)


def test_checkpoint_callback_after_pruning_epoch(tmp_path):
    model = _model(l0_lambda=50.0, learning_rate=0.05, droprate_init=0.8)
    x, y = _data(256)
    ckpt = tmp_path / "ckpt.keras"
    model.fit(x, y, epochs=2, batch_size=16, mode="hp", verbose=0,
              callbacks=[keras.callbacks.ModelCheckpoint(ckpt)])
    assert model.architecture() != [20, 12, 8, 4]
    loaded = keras.saving.load_model(ckpt)
    assert loaded.architecture() == model.architecture()
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations)
    # the checkpoint holds the last epoch's cosine rate (half of 0.05); the fit put 0.05 back
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.025)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        if "learning_rate" not in a.path:
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    loaded.fit(x, y, epochs=3, initial_epoch=2, batch_size=16, mode="hp", verbose=0)


def test_surgery_is_all_or_nothing(monkeypatch):
    model = _model()
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for layer in model.gated_layers:
        _set_stats(layer, np.linspace(0, 1, layer.input_dim))
    arch, weights = model.architecture(), [w.copy() for w in model.get_weights()]
    optimizer, indices = model.optimizer, model.feature_select.indices

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(surgery, "carry_optimizer_state", interrupted)
    with pytest.raises(KeyboardInterrupt):
        surgery.prune_model(model, gamma=0.5)
    assert model.architecture() == arch and model.optimizer is optimizer
    assert model.feature_select.indices == indices
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # still trains
    monkeypatch.undo()
    for layer in model.gated_layers:
        _set_stats(layer, np.linspace(0, 1, layer.input_dim))
    assert surgery.prune_model(model, gamma=0.5)["changed"]


def test_remove_units_takes_explicit_masks_and_rejects_empty_ones():
    model = _model()
    x, _ = _data()
    keep = [np.arange(20) % 2 == 0, np.arange(12) < 5, None]
    report = surgery.remove_units(model, keep)
    assert report["units_after"] == [10, 5, 8] and report["pruned"] == [10, 7, 0]
    assert model.architecture() == [10, 5, 8, 4]
    assert model.feature_select.indices == list(range(0, 20, 2))
    assert model.predict(x, verbose=0).shape == (64, 4)
    with pytest.raises(ValueError, match="non-empty selection"):
        surgery.remove_units(model, [np.zeros(10, bool), None, None])
    with pytest.raises(ValueError, match="non-empty selection"):
        surgery.remove_units(model, [np.ones(3, bool), None, None])
    assert model.architecture() == [10, 5, 8, 4]


def _cnn(seed=0):
    model = keras_dynhp.build_lenet5(input_shape=(20, 20, 1), filters=(4, 6), dense_units=12, num_classes=5,
                                     seed=seed, penalty="size")
    return model


def test_cnn_surgery_is_exact_across_pooling_and_flatten_and_slices_the_optimizer():
    """Hand-set zero gates on conv channels, on flattened features (one channel's all four) and
    hidden units: the pruned CNN predicts exactly as before, and every matrix shrank."""
    model = _cnn()
    rng = np.random.default_rng(0)
    x = rng.random((40, 20, 20, 1)).astype("float32")
    y = rng.integers(0, 5, 40)
    model.fit(x, y, epochs=1, batch_size=20, verbose=0)  # builds Adam's moments
    conv1, dense2, dense3 = model.gated_layers[1:]
    closed = LOG_ALPHA_RANGE[0]  # deterministic gate exactly 0
    owners = model.links()[2]
    assert dense2.gated_units == 6 * 2 * 2 and list(owners[:6]) == list(range(6))
    masks = [None]
    for layer, off in ((conv1, [1]), (dense2, list(np.flatnonzero(owners == 3)) + [0, 7]), (dense3, [2, 7])):
        la = np.asarray(layer.log_alpha).copy()
        la[off] = closed
        layer.log_alpha.assign(la)
        keep = np.ones(layer.gated_units, bool)
        keep[off] = False
        masks.append(keep)
    before = model.predict(x, verbose=0)
    slots = {v.path: np.asarray(v) for v in model.optimizer.variables}
    report = surgery.remove_units(model, masks)
    assert report["units_after"] == [1, 3, 18, 10]
    assert model.layer_widths() == [(1, 3), (3, 5), (18, 10), (10, 5)]
    assert tuple(model.gated_layers[1].kernel.shape) == (5, 5, 3, 5)  # conv 1 lost input 1, filter 3
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-5)
    # Adam's moments of conv 1's kernel: input channel 1 and output channel 3 removed, not reset.
    moment = next(k for k in slots if "l0_conv_1" in k and "kernel" in k and "momentum" in k)
    new = next(np.asarray(v) for v in model.optimizer.variables if v.path == moment)
    np.testing.assert_array_equal(new, np.delete(np.delete(slots[moment], 1, axis=2), 3, axis=3))
    # The gather after Flatten reads the narrower map: 5 channels x 4 positions, 18 kept.
    select = model.link_selects[1]
    assert select.input_dim == 20 and len(select.indices) == 18
    model.fit(x, y, epochs=2, initial_epoch=1, batch_size=20, verbose=0, mode="hp")  # trains on


def test_cnn_saves_and_loads_after_surgery(tmp_path):
    model = _cnn(seed=1)
    rng = np.random.default_rng(1)
    x = rng.random((30, 20, 20, 1)).astype("float32")
    y = rng.integers(0, 5, 30)
    model.fit(x, y, epochs=1, batch_size=10, verbose=0)
    keep = [None, np.array([1, 1, 0, 1], bool), np.arange(24) % 6 != 2, None]
    surgery.remove_units(model, keep)
    path = tmp_path / "cnn.keras"
    model.save(path)
    loaded = keras_dynhp.load_model(path)
    assert loaded.layer_widths() == model.layer_widths() == [(1, 3), (3, 5), (20, 12), (12, 5)]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    loaded.fit(x, y, epochs=2, initial_epoch=1, batch_size=10, verbose=0, mode="hp")


def test_a_jax_fit_that_prunes_does_not_load_tensorflow():
    """Surgery copies layers without Keras's serialisation, which imports TensorFlow (#26)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, keras_dynhp\n"
        "x = np.random.default_rng(0).random((256, 20), dtype='float32'); y = np.arange(256) % 4\n"
        "m = keras_dynhp.build_mlp([12, 8], input_dim=20, num_classes=4, seed=0)\n"
        "m.fit(x, y, epochs=2, mode='dynhp', memory_budget='64KiB', model_budget=600, verbose=0,"
        " callbacks=[__import__('keras').callbacks.EarlyStopping('loss', restore_best_weights=True)])\n"
        "assert m.delivered_bytes() <= 600, m.delivered_bytes()\n"
        "print('tensorflow' in sys.modules)\n")
    env = dict(os.environ, KERAS_BACKEND="jax")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
