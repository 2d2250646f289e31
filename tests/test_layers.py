"""Gated layers: L0Dense, FeatureSelect, the GatedLayer interface and registry."""

import math

import keras
import numpy as np
import pytest

from keras_dynhp import layers as L
from keras_dynhp.layers import L0Dense


def np_prob(log_alpha, beta=2 / 3):
    return 1 / (1 + np.exp(-(log_alpha - beta * math.log(0.1 / 1.1))))


def test_inference_gates_match_closed_form():
    layer = L0Dense(3)
    layer.build((None, 5))
    la = np.array([-5.0, -1.0, 0.0, 1.0, 4.0], "float32")
    layer.log_alpha.assign(la)
    expected = np.clip(1 / (1 + np.exp(-la)) * 1.2 - 0.1, 0, 1)
    np.testing.assert_allclose(np.asarray(layer.inference_gates()), expected, rtol=1e-6)
    x = np.ones((2, 5), "float32")
    out = np.asarray(layer(x, training=False))
    np.testing.assert_allclose(out, (x * expected) @ layer.kernel.numpy() + layer.bias.numpy(), rtol=1e-5)
    assert float(layer.expected_active_units()) == pytest.approx(np_prob(la).sum(), rel=1e-5)


def test_gradients_flow_to_log_alpha_and_kernel():
    """Backend-neutral: a few SGD steps move the kernel and the gate parameters."""
    layer = L0Dense(4, activation="relu", seed=0)
    model = keras.Sequential([keras.Input((6,)), layer])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    kernel, log_alpha = layer.kernel.numpy().copy(), layer.log_alpha.numpy().copy()
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    model.fit(x, np.ones((8, 4), "float32"), epochs=2, batch_size=8, verbose=0)
    assert np.abs(np.asarray(layer.kernel) - kernel).sum() > 0
    assert np.abs(np.asarray(layer.log_alpha) - log_alpha).sum() > 0


def test_penalty_equals_closed_form():
    layer = L0Dense(3, l0_lambda=0.1, weight_decay=0.5, dataset_size=50)
    layer.build((None, 4))
    la = np.array([-2.0, 0.0, 1.0, 3.0], "float32")
    w = np.arange(12, dtype="float32").reshape(4, 3) / 10
    b = np.array([1.0, -2.0, 0.5], "float32")
    layer.log_alpha.assign(la)
    layer.kernel.assign(w)
    layer.bias.assign(b)
    p = np_prob(la)
    expected = (np.sum(p * (0.1 * 3 + 0.25 * (w**2).sum(1))) + 0.25 * (b**2).sum()) / 50
    assert float(layer.l0_penalty()) == pytest.approx(expected, rel=1e-5)
    layer(np.ones((2, 4), "float32"))
    assert float(layer.losses[0]) == pytest.approx(expected, rel=1e-5)


def test_gate_statistics_count_active_observations():
    layer = L0Dense(2, per_example_gates=True, seed=3)
    layer.build((None, 3))
    layer.log_alpha.assign(np.array([-4.6, 0.0, 4.6], "float32"))
    layer(np.ones((20_000, 3), "float32"), training=True)
    assert float(layer.gate_observations) == 20_000
    rates = layer.activation_rates()
    np.testing.assert_allclose(rates, np_prob(np.array([-4.6, 0.0, 4.6])), atol=0.015)
    layer(np.ones((5, 3), "float32"), training=False)  # inference does not count
    assert float(layer.gate_observations) == 20_000
    layer.reset_gate_stats()
    assert layer.activation_rates() is None


def test_per_batch_gates_share_one_sample():
    layer = L0Dense(2, per_example_gates=False, seed=4)
    layer.build((None, 6))
    gated = np.asarray(layer.gated_inputs(np.ones((50, 6), "float32"), training=True))
    assert np.all(gated == gated[0])
    assert float(layer.gate_observations) == 1


def test_save_load_round_trip(tmp_path):
    inputs = keras.Input((6,))
    outputs = L0Dense(3, activation="softmax", l0_lambda=0.2, seed=1)(L0Dense(5, "relu", seed=0)(inputs))
    model = keras.Model(inputs, outputs)
    model.layers[1].log_alpha.assign(np.linspace(-3, 3, 6).astype("float32"))
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    layer = model.layers[2]
    clone = L0Dense.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"units": 0}, "units"),
        ({"units": -3}, "units"),
        ({"units": 2, "droprate_init": 0.0}, "droprate_init"),
        ({"units": 2, "droprate_init": 1.0}, "droprate_init"),
        ({"units": 2, "temperature": 0.0}, "temperature"),
        ({"units": 2, "l0_lambda": -0.1}, "l0_lambda"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs, name):
    with pytest.raises(ValueError, match=name):
        L0Dense(**kwargs)


def test_wrong_rank_and_width_raise():
    layer = L0Dense(2)
    with pytest.raises(ValueError, match="rank 2"):
        layer.build((None, 3, 4))
    layer = L0Dense(2)
    layer(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError):
        layer(np.ones((1, 4), "float32"))


def test_feature_select():
    sel = L.FeatureSelect(5, [1, 3])
    np.testing.assert_array_equal(np.asarray(sel(np.arange(10.0).reshape(2, 5))), [[1, 3], [6, 8]])
    assert L.FeatureSelect(3, [0, 1, 2]).indices is None
    with pytest.raises(ValueError, match="indices"):
        L.FeatureSelect(3, [5])


def test_registry_maps_plain_to_gated_layers():
    registry = L.registered_gated_layers()
    assert registry[keras.layers.Dense] is L0Dense
    assert registry[keras.layers.Conv2D] is L.L0Conv2D
    with pytest.raises(TypeError, match="GatedLayer"):
        L.register_gated_layer(keras.layers.Conv3D)(keras.layers.Layer)
    assert keras.layers.Conv3D not in L.registered_gated_layers()


def test_pruned_copy_slices_owned_weights_and_keeps_the_noise_state():
    layer = L0Dense(4, activation="relu", seed=0)
    layer.build((None, 5))
    layer(np.ones((3, 5), "float32"), training=True)  # advance the gate-noise state
    rows, cols = np.array([0, 2, 4]), np.array([1, 3])
    new = layer.pruned(keep_inputs=rows, keep_outputs=cols)
    assert (new.gated_units, new.units, new.output_units) == (3, 2, 2)
    np.testing.assert_array_equal(new.kernel.numpy(), layer.kernel.numpy()[rows][:, cols])
    np.testing.assert_array_equal(new.bias.numpy(), layer.bias.numpy()[cols])
    np.testing.assert_array_equal(new.log_alpha.numpy(), layer.log_alpha.numpy()[rows])
    np.testing.assert_array_equal(new.gate_active_count.numpy(), layer.gate_active_count.numpy()[rows])
    assert float(new.gate_observations) == float(layer.gate_observations)
    np.testing.assert_array_equal(new.seed_generator.state.numpy(), layer.seed_generator.state.numpy())
    assert new.kernel.path == layer.kernel.path and new.name == layer.name
    assert new.num_params() == 3 * 2 + 2
    assert layer.kernel.shape == (5, 4)  # the original is untouched


def test_to_plain_folds_the_inference_gates():
    layer = L0Dense(3, activation="relu", seed=0)
    layer.build((None, 4))
    layer.log_alpha.assign(np.array([-5.0, 0.5, 2.0, 4.0], "float32"))
    keep = np.array([1, 2, 3])
    dense = layer.to_plain(keep, None, name="dense_0")
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(dense(x[:, keep])), np.asarray(layer(x, training=False)), atol=1e-6)

