"""L0Conv2D: gate maths on channels, penalty, config, conversion to and from Conv2D."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_dynhp.layers import L0Conv2D, registered_gated_layers


def np_prob(log_alpha, beta=2 / 3):
    return 1 / (1 + np.exp(-(log_alpha - beta * math.log(0.1 / 1.1))))


def reference_conv(x, kernel, bias, strides=(1, 1), padding="valid"):
    """A plain Keras Conv2D with the given weights (the reference)."""
    conv = keras.layers.Conv2D(kernel.shape[3], kernel.shape[:2], strides=strides, padding=padding)
    conv.build(x.shape)
    conv.set_weights([kernel, bias])
    return np.asarray(conv(x))


@pytest.mark.parametrize("padding,strides", [("valid", 1), ("same", 2)])
def test_inference_is_a_convolution_of_gated_channels(padding, strides):
    layer = L0Conv2D(4, 3, strides=strides, padding=padding, seed=0)
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 3)).astype("float32")
    layer.build(x.shape)
    la = np.array([-5.0, 0.5, 4.0], "float32")
    layer.log_alpha.assign(la)
    z = np.clip(1 / (1 + np.exp(-la)) * 1.2 - 0.1, 0, 1)
    out = np.asarray(layer(x, training=False))
    expected = reference_conv(x * z, np.asarray(layer.kernel), np.asarray(layer.bias), (strides,) * 2, padding)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert out.shape == tuple(layer.compute_output_shape(x.shape))
    assert tuple(layer.preactivation_shape) == out.shape[1:]


def test_training_gates_one_per_channel_and_example_and_counted():
    layer = L0Conv2D(2, 3, seed=1)
    x = np.ones((16, 6, 6, 5), "float32")
    layer.build(x.shape)
    gated = np.asarray(layer.gated_inputs(ops.convert_to_tensor(x), training=True))
    # Each (example, channel) map is scaled by one gate: constant over height and width.
    assert np.allclose(gated, gated[:, :1, :1, :])
    assert len({tuple(np.round(g[0, 0], 6)) for g in gated}) > 1  # per example
    assert float(layer.gate_observations) == 16
    assert np.array_equal(np.asarray(layer.gate_active_count), (gated[:, 0, 0, :] > 0).sum(axis=0))


def test_penalty_weights_each_gate_by_the_kernel_entries_it_controls():
    layer = L0Conv2D(6, (3, 2), l0_lambda=0.1, weight_decay=0.5, dataset_size=40)
    layer.build((None, 8, 8, 4))
    la = np.array([-2.0, 0.0, 1.0, 3.0], "float32")
    layer.log_alpha.assign(la)
    w = np.asarray(layer.kernel)
    b = np.linspace(-1, 1, 6).astype("float32")
    layer.bias.assign(b)
    per_gate = 0.1 * 3 * 2 * 6 + 0.25 * (w ** 2).sum(axis=(0, 1, 3))
    expected = (np.sum(np_prob(la) * per_gate) + 0.25 * (b ** 2).sum()) / 40
    assert float(layer.l0_penalty()) == pytest.approx(expected, rel=1e-5)
    assert layer.num_params() == 3 * 2 * 4 * 6 + 6
    assert layer.params_for(2, 5) == 3 * 2 * 2 * 5 + 5


def test_without_input_gates_images_pass_untouched_and_never_prune():
    layer = L0Conv2D(3, 3, gate_inputs=False, seed=0)
    x = np.random.default_rng(1).normal(size=(4, 7, 7, 2)).astype("float32")
    layer.build(x.shape)
    assert not layer.log_alpha.trainable
    train = np.asarray(layer.preactivation(layer.gated_inputs(ops.convert_to_tensor(x), training=True)))
    expected = reference_conv(x, np.asarray(layer.kernel), np.asarray(layer.bias))
    np.testing.assert_allclose(train, expected, rtol=1e-5, atol=1e-5)
    assert layer.activation_rates() is None
    assert np.all(np.asarray(layer.gate_probability()) == 1.0)


def test_config_round_trips_and_pruned_copy_keeps_slices():
    layer = L0Conv2D(5, 3, strides=2, padding="same", activation="relu", l0_lambda=0.2, seed=3,
                     gate_inputs=True, name="c")
    layer.build((None, 10, 10, 4))
    again = L0Conv2D.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    small = layer.pruned(keep_inputs=[0, 2], keep_outputs=[1, 3, 4])
    kernel = np.asarray(layer.kernel)
    np.testing.assert_array_equal(np.asarray(small.kernel), kernel[:, :, [0, 2]][:, :, :, [1, 3, 4]])
    np.testing.assert_array_equal(np.asarray(small.log_alpha), np.asarray(layer.log_alpha)[[0, 2]])
    assert (small.input_channels, small.filters, small.spatial_size) == (2, 3, (10, 10))


def test_from_plain_and_to_plain_are_exact():
    conv = keras.layers.Conv2D(4, 3, activation="relu", padding="same")
    model = keras.Sequential([keras.Input((8, 8, 2)), conv])
    assert registered_gated_layers()[keras.layers.Conv2D] is L0Conv2D
    gated = L0Conv2D.from_plain(conv, droprate_init=0.01)
    x = np.random.default_rng(2).normal(size=(3, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(np.asarray(gated(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    gated.log_alpha.assign(np.array([0.3, -6.0], "float32"))
    plain = gated.to_plain([0], [1, 2], name="p")
    z = np.asarray(gated.inference_gates())
    assert z[1] == 0.0
    np.testing.assert_allclose(np.asarray(plain(x[..., :1])), np.asarray(gated(x))[..., [1, 2]],
                               rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="padding"):
        L0Conv2D(2, 3, padding="causal")
    with pytest.raises(ValueError, match="kernel_size"):
        L0Conv2D(2, (3, 3, 3))
    with pytest.raises(ValueError, match="rank 4"):
        L0Conv2D(2, 3).build((None, 10))
    with pytest.raises(ValueError, match="does not fit"):
        L0Conv2D(2, 5).build((None, 3, 3, 1))
    dilated = keras.layers.Conv2D(2, 3, dilation_rate=2)
    dilated.build((None, 9, 9, 1))
    with pytest.raises(ValueError, match="dilation_rate"):
        L0Conv2D.from_plain(dilated)
