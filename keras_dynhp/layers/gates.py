"""Hard-concrete L0 gates: the maths every gated layer shares (paper eq. 3-5).

Concepts page "Hard-concrete gate"; Louizos et al. 2018. The gated layers
(:class:`~keras_dynhp.layers.L0Dense`, and any layer type registered with
:func:`~keras_dynhp.layers.register_gated_layer`) call these functions; the
penalty's per-gate weighting (what a gate controls) belongs to each layer type.

The equations (numbers from the paper):

* sample (training), eq. 3-4::

      u ~ U(eps, 1 - eps)
      s = sigmoid((log u - log(1 - u) + log_alpha) / beta)
      z = clip(s * (zeta - gamma) + gamma, 0, 1)

* deterministic gate (inference)::

      z = clip(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)

* probability of a non-zero gate, eq. 4::

      P(z > 0) = 1 - Q(0) = sigmoid(log_alpha - beta * log(-gamma / zeta))

* penalty added to the mean data loss, eq. 5 with the Louizos reference's
  weighting (for :class:`~keras_dynhp.layers.L0Dense`, see its `l0_penalty`)::

      R = (1 / N) * sum_j P(z_j > 0) * (l0_lambda * units + weight_decay / 2 * ||W_j||^2)
          + (1 / N) * weight_decay / 2 * ||b||^2
"""

import math

import keras
import numpy as np
from keras import ops

# Hard-concrete constants (Louizos et al. 2018).
LIMIT_LOW = -0.1  # gamma (stretch lower limit)
LIMIT_HIGH = 1.1  # zeta (stretch upper limit)
EPSILON = 1e-6
DEFAULT_TEMPERATURE = 2.0 / 3.0
# log_alpha is clamped to [log(1e-2), log(1e2)] as in the Louizos reference.
LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))


def _mix32(x):
    """The lowbias32 integer hash (C. Wellons): a bijection of uint32 with good avalanche."""
    x = ops.bitwise_xor(x, ops.right_shift(x, _U16))
    x = ops.multiply(x, _M1)
    x = ops.bitwise_xor(x, ops.right_shift(x, _U15))
    x = ops.multiply(x, _M2)
    return ops.bitwise_xor(x, ops.right_shift(x, _U16))


_U15, _U16 = np.uint32(15), np.uint32(16)
_M1, _M2, _GOLDEN = np.uint32(0x7FEB352D), np.uint32(0x846CA68B), np.uint32(0x9E3779B9)


def uniform_noise(shape, seed):
    """Uniform noise in (eps, 1 - eps) hashed from (seed, position): the gates' u of eq. 3.

    A counter-based generator: element k is `lowbias32(k * golden + key)`, its top
    24 bits mapped to (eps, 1 - eps), with `key` mixed from the two seed words. On
    CPU it is several times cheaper than the backends' own generators (JAX's
    threefry costs most of a gated layer's step and of its compilation), and it
    is the same on every backend: a seed gives the same noise on TensorFlow and JAX.

    Args:
        shape: Shape of the noise.
        seed: Two integers (a `keras.random.SeedGenerator.next()` value).

    Returns:
        A float32 tensor of `shape`.
    """
    seed = ops.cast(seed, "uint32")
    key = _mix32(ops.bitwise_xor(seed[0], _mix32(seed[1] + _GOLDEN)))
    # Element positions, row-major; the leading (batch) size may be symbolic.
    index = ops.arange(shape[-1], dtype="int32")
    if len(shape) == 2:
        index = ops.arange(shape[0], dtype="int32")[:, None] * shape[-1] + index[None, :]
    elif len(shape) != 1:
        raise ValueError(f"uniform_noise takes a 1-D or 2-D shape; received {shape}.")
    x = _mix32(ops.multiply(ops.cast(index, "uint32"), _GOLDEN) + key)
    u = (ops.cast(ops.right_shift(x, np.uint32(8)), "float32") + 0.5) * (1.0 / 16777216.0)
    return EPSILON + (1.0 - 2.0 * EPSILON) * u


class NumpyOps:
    """The few `keras.ops` the gate maths use, in NumPy (float32), with their names.

    For the bookkeeping between epochs (gate probabilities, expected and
    delivered sizes, the penalty's value for the logs): through `keras.ops` a
    compiling backend (JAX) compiles every such op anew for each new layer
    width, i.e. after every surgery. Pass `xp=NumpyOps` to the functions
    below (and `numpy=True` to the layers' methods) to compute them here.
    """

    sum = staticmethod(np.sum)
    square = staticmethod(np.square)
    log = staticmethod(np.log)
    exp = staticmethod(np.exp)
    maximum = staticmethod(np.maximum)
    matmul = staticmethod(np.matmul)
    clip = staticmethod(np.clip)

    @staticmethod
    def sigmoid(x):
        x = np.asarray(x, "float32")
        return (1.0 / (1.0 + np.exp(-x))).astype("float32")

    @staticmethod
    def ones(shape):
        return np.ones(shape, "float32")


def hard_concrete_sample(log_alpha, u, temperature=DEFAULT_TEMPERATURE):
    """Draws hard-concrete gates from uniform noise (paper eq. 3-4).

    Args:
        log_alpha: Gate location parameters, broadcastable against `u`.
        u: Uniform noise in (eps, 1 - eps).
        temperature: The concrete temperature beta.

    Returns:
        Gates `z` in [0, 1], exactly 0 or 1 with positive probability.
    """
    s = ops.sigmoid((ops.log(u) - ops.log(1.0 - u) + log_alpha) / temperature)
    return ops.clip(s * (LIMIT_HIGH - LIMIT_LOW) + LIMIT_LOW, 0.0, 1.0)


def deterministic_gate(log_alpha, xp=ops):
    """Inference-time gate: clip(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1).

    `xp`: `keras.ops` (tensors) or :class:`NumpyOps` (NumPy arrays).
    """
    return xp.clip(
        xp.sigmoid(log_alpha) * (LIMIT_HIGH - LIMIT_LOW) + LIMIT_LOW, 0.0, 1.0
    )


def gate_probability(log_alpha, temperature=DEFAULT_TEMPERATURE, xp=ops):
    """P(z > 0) = 1 - Q(0) = sigmoid(log_alpha - beta * log(-gamma / zeta)) (eq. 4).

    `xp`: `keras.ops` (tensors) or :class:`NumpyOps` (NumPy arrays).
    """
    shift = temperature * math.log(-LIMIT_LOW / LIMIT_HIGH)
    return xp.sigmoid(log_alpha - shift)


@keras.saving.register_keras_serializable(package="keras_dynhp")
class ClipLogAlpha(keras.constraints.Constraint):
    """Clamps gate parameters to a safe range after every optimizer step.

    Args:
        min_value: Lower bound of `log_alpha`.
        max_value: Upper bound of `log_alpha`.
    """

    def __init__(self, min_value=LOG_ALPHA_RANGE[0], max_value=LOG_ALPHA_RANGE[1]):
        self.min_value = float(min_value)
        self.max_value = float(max_value)

    def __call__(self, w):
        return ops.clip(w, self.min_value, self.max_value)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}
