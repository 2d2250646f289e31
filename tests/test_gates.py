"""Hard-concrete gate maths (eq. 3-5) against closed forms and sampling."""

import math

import numpy as np
import pytest

from keras_dynhp import layers as L


def np_prob(log_alpha, beta=2 / 3):
    return 1 / (1 + np.exp(-(log_alpha - beta * math.log(0.1 / 1.1))))


@pytest.mark.parametrize("log_alpha", [-3.0, -1.0, 0.0, 1.5, 3.0])
def test_empirical_gate_probability_matches_closed_form(log_alpha):
    rng = np.random.default_rng(1)
    u = rng.uniform(1e-6, 1 - 1e-6, size=400_000).astype("float32")
    z = np.asarray(L.hard_concrete_sample(np.float32(log_alpha), u))
    empirical = (z > 0).mean()
    closed = float(L.gate_probability(np.float32(log_alpha)))
    assert closed == pytest.approx(np_prob(log_alpha), rel=1e-5)
    assert abs(empirical - closed) < 0.01


def test_gates_are_exactly_zero_and_one_with_positive_probability():
    u = np.random.default_rng(2).uniform(1e-6, 1 - 1e-6, size=100_000).astype("float32")
    z = np.asarray(L.hard_concrete_sample(np.float32(0.0), u))
    assert (z == 0.0).mean() > 0.05
    assert (z == 1.0).mean() > 0.05
    assert ((z > 0) & (z < 1)).mean() > 0.05


def test_uniform_noise_is_uniform_seeded_and_independent():
    seed = np.array([7, 11], "uint32")
    u = np.asarray(L.uniform_noise((2000, 300), seed))
    assert u.shape == (2000, 300) and u.dtype == np.float32
    assert L.EPSILON <= u.min() and u.max() <= 1 - L.EPSILON
    counts = np.histogram(u, bins=20, range=(0, 1))[0]
    expected = u.size / 20
    assert ((counts - expected) ** 2 / expected).sum() < 60  # chi-square, 19 dof (p ~ 1e-5)
    assert abs(u.mean() - 0.5) < 0.002 and abs(u.var() - 1 / 12) < 0.001
    np.testing.assert_array_equal(u, np.asarray(L.uniform_noise((2000, 300), seed)))  # seeded
    for other in ([7, 12], [8, 11]):  # a different seed word: unrelated noise
        v = np.asarray(L.uniform_noise((2000, 300), np.array(other, "uint32")))
        assert abs(np.corrcoef(u.ravel(), v.ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 0.01  # neighbours
