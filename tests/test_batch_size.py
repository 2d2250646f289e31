import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_dynhp import batch_size as bs
from keras_dynhp import memory


@pytest.mark.parametrize("n_in, n_out, batch", [(5, 3, 1), (7, 4, 8), (20, 10, 33)])
def test_variance_matches_brute_force(n_in, n_out, batch):
    rng = np.random.default_rng(n_in * batch)
    a = tf.constant(rng.normal(size=(batch, n_in)))
    w = tf.Variable(rng.normal(size=(n_in, n_out)))
    b = tf.Variable(rng.normal(size=(n_out,)))
    y = rng.normal(size=(batch, n_out))

    def per_example_loss(h, target):
        return tf.reduce_sum(tf.tanh(h) ** 2 * target, axis=-1)

    with tf.GradientTape() as tape:
        h = a @ w + b
        loss = tf.reduce_mean(per_example_loss(h, y))
    d = tape.gradient(loss, h)
    s_w, s_b = bs.dense_gradient_variance(a, d, batch)

    grads_w, grads_b = [], []
    for i in range(batch):  # brute force: one example at a time
        with tf.GradientTape() as t2:
            li = per_example_loss(a[i : i + 1] @ w + b, y[i : i + 1])
        gw, gb = t2.gradient(li, [w, b])
        grads_w.append(gw.numpy())
        grads_b.append(gb.numpy())
    # float64 on TensorFlow; JAX computes in float32 (x64 off), hence its absolute tolerance
    atol = 1e-12 if keras.backend.backend() == "tensorflow" else 1e-6
    np.testing.assert_allclose(np.asarray(s_w), np.var(grads_w, axis=0), rtol=1e-5, atol=atol)
    np.testing.assert_allclose(np.asarray(s_b), np.var(grads_b, axis=0), rtol=1e-5, atol=atol)
    total = bs.gradient_variance_l1([a], [d], batch)
    assert float(total) == pytest.approx(np.var(grads_w, 0).sum() + np.var(grads_b, 0).sum(), rel=1e-5)


def test_batch_rule_by_hand():
    s, f, alpha = 123.4, 0.7, 0.98
    candidate = 16 + math.ceil((1 - alpha) * s / f)
    assert bs.candidate_batch_size(16, s, f, alpha) == candidate
    params, dim = 5000, 784
    roomy = memory.mo_bytes(params, 10_000, dim)
    assert bs.next_batch_size(16, s, f, alpha, roomy, params, dim) == candidate
    tight = memory.mo_bytes(params, 18, dim) + 100
    assert bs.next_batch_size(16, s, f, alpha, tight, params, dim) == 18  # eq. 10 cap
    # never shrinks, even if the cap would be lower
    assert bs.next_batch_size(30, s, f, alpha, tight, params, dim) == 30
    assert bs.next_batch_size(16, s, 0.0, alpha, roomy, params, dim) == 16


def test_alpha_near_one_is_flat_and_smaller_alpha_grows_faster():
    sizes = [bs.candidate_batch_size(16, 50.0, 1.0, a) for a in (0.999999, 0.99, 0.98, 0.9, 0.5)]
    assert sizes[0] == 17
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5, "x", None])
def test_invalid_alpha(alpha):
    with pytest.raises(ValueError, match="alpha_bs"):
        bs.DynamicBatchSize(alpha, "1MiB")


def test_controller_config_and_budget_check():
    c = bs.DynamicBatchSize(0.98, "1433KiB", 16, 2)
    assert bs.DynamicBatchSize.from_config(c.get_config()).get_config() == c.get_config()
    with pytest.raises(ValueError, match="memory_budget"):
        bs.DynamicBatchSize(0.98, "100KiB").check_fits(266_610, 784)
    for bad in ("lots", 0, -5):
        with pytest.raises(ValueError):
            bs.DynamicBatchSize(0.98, bad)


def test_multiple_of_rounds_the_candidate_up_and_the_cap_down():
    # eq. 8 gives 16 + ceil(0.5 * 3 / 1) = 18; with 4 devices sharing a batch that is 20
    budget = memory.mo_bytes(1000, 30, 10)  # eq. 10's cap: 30, so 28 with multiple_of=4
    assert bs.next_batch_size(16, 3.0, 1.0, 0.5, budget, 1000, 10) == 18
    assert bs.next_batch_size(16, 3.0, 1.0, 0.5, budget, 1000, 10, multiple_of=4) == 20
    assert bs.next_batch_size(16, 100.0, 1.0, 0.5, budget, 1000, 10, multiple_of=4) == 28  # under the cap
    assert bs.next_batch_size(28, 100.0, 1.0, 0.5, budget, 1000, 10, multiple_of=4) == 28  # never shrinks
    policy = bs.DynamicBatchSize(0.5, budget, 16, multiple_of=4)
    assert bs.DynamicBatchSize.from_config(policy.get_config()).multiple_of == 4


def _conv_per_example_gradients(x, e, kernel_size, strides, padding):
    """Brute force: each example's kernel and bias gradient, by explicit loops over positions."""
    kh, kw = kernel_size
    b, h, w, c = x.shape
    out_h, out_w, f = e.shape[1:]
    if padding == "same":  # Keras / TensorFlow "same": the extra row and column go at the end
        pad_h = max((out_h - 1) * strides + kh - h, 0)
        pad_w = max((out_w - 1) * strides + kw - w, 0)
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    grads = np.zeros((b, kh, kw, c, f))
    for i in range(b):
        for oh in range(out_h):
            for ow in range(out_w):
                patch = x[i, oh * strides: oh * strides + kh, ow * strides: ow * strides + kw, :]
                grads[i] += patch[..., None] * e[i, oh, ow][None, None, None, :]
    return grads.reshape(b, -1), e.sum(axis=(1, 2))


@pytest.mark.parametrize("shape,kernel,filters,strides,padding", [
    ((5, 9, 9, 2), 3, 3, 1, "valid"),   # K * F = 54 <= 2 P^2: per-example gradients
    ((4, 5, 5, 8), 3, 10, 2, "same"),   # K * F = 720 > 2 P^2 = 162: Gram matrices
])
def test_conv_variance_matches_brute_force_per_example_gradients(shape, kernel, filters, strides, padding):
    from keras_dynhp.layers import L0Conv2D

    rng = np.random.default_rng(0)
    layer = L0Conv2D(filters, kernel, strides=strides, padding=padding, gate_inputs=False)
    layer.build((None,) + shape[1:])
    x = rng.normal(size=shape).astype("float32")
    out_shape = layer.preactivation_shape
    e = rng.normal(size=(shape[0],) + tuple(out_shape)).astype("float32")  # d l_i / d h_i
    batch = shape[0]
    g_w, g_b = _conv_per_example_gradients(x.astype("float64"), e.astype("float64"), (kernel, kernel),
                                           strides, padding)
    expected = g_w.var(axis=0).sum() + g_b.var(axis=0).sum()  # denominator B, as eq. 8's S
    got = float(layer.variance_l1(x, e / batch, batch))  # d of the *mean* loss is e / B
    assert got == pytest.approx(expected, rel=1e-4)


def test_conv_variance_with_one_position_is_the_dense_formula():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 1, 7)).astype("float32")
    d = rng.normal(size=(6, 1, 4)).astype("float32")
    conv = float(bs.conv_variance_l1(a, d, 6))
    dense = float(bs.dense_variance_l1(a[:, 0], d[:, 0], 6))
    assert conv == pytest.approx(dense, rel=1e-5)
