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
