"""Dynamic batch sizing from gradient variance under a memory budget.

Paper section 4.2, eq. 8-10; the docs' Concepts page, "Dynamic batch sizing under a budget".

Gradient variance (CABS, Balles et al. 2017). For a dense layer ``h = a W + b``
trained on the *mean* loss of a batch of B examples, let ``d = dL/dh`` (B, out).
The per-example gradient of example i's loss is ``g_i = B * a_i^T d_i``, so,
without materialising any per-example gradient::

    sum_i g_i^2 / B = B * (a * a)^T (d * d)          # mean of squares
    (sum_i g_i / B)^2 = (a^T d)^2                    # square of mean
    S_W = B * (a * a)^T (d * d) - (a^T d)^2          # variance, denominator B
    S_b = B * sum_i d_i^2 - (sum_i d_i)^2

Gate parameters (``log_alpha``) are *excluded* from S: their per-example
gradients are not an outer product of layer quantities, and CABS was defined on
the network weights. ``||S||_1`` sums S over all kernels and biases.

Batch rule at the end of each epoch (S and F averaged over the epoch's measured
steps; F is the mean data loss)::

    b~ = b + ceil((1 - alpha_bs) * ||S||_1 / F)                 # eq. 8
    b_max = floor((C - N_i) / bytes_per_example)                # eq. 9-10
    b_{i+1} = max(b, min(b~, b_max))                            # never shrinks
"""

import math

import keras
from keras import ops

from keras_dynhp import memory


def dense_gradient_variance(a, d, batch_size):
    """Per-parameter variance of per-example gradients of a dense layer.

    Args:
        a: Layer inputs (after gating), shape (B, in).
        d: Gradient of the *mean* batch loss w.r.t. the pre-activations, (B, out).
        batch_size: B, as a scalar (tensor or number).

    Returns:
        `(S_kernel, S_bias)` of shapes (in, out) and (out,).
    """
    b = ops.cast(batch_size, d.dtype)
    mean_sq_w = b * ops.matmul(ops.transpose(ops.square(a)), ops.square(d))
    sq_mean_w = ops.square(ops.matmul(ops.transpose(a), d))
    mean_sq_b = b * ops.sum(ops.square(d), axis=0)
    sq_mean_b = ops.square(ops.sum(d, axis=0))
    return ops.maximum(mean_sq_w - sq_mean_w, 0.0), ops.maximum(mean_sq_b - sq_mean_b, 0.0)


def gradient_variance_l1(inputs, preact_grads, batch_size):
    """||S||_1 summed over the kernels and biases of a stack of dense layers.

    Only the *sum* of the variances is needed, so the (in, out) variance matrix
    is never formed: summing ``S_W = B (a*a)^T (d*d) - (a^T d)^2`` over all
    entries gives::

        sum(S_W) = B * sum_i ||a_i||^2 ||d_i||^2 - ||a^T d||_F^2
        sum(S_b) = B * sum_i ||d_i||^2 - ||sum_i d_i||^2

    which costs one (in, B) x (B, out) product per layer instead of two, and no
    elementwise work on (in, out) matrices besides squaring ``a^T d``.
    :func:`dense_gradient_variance` gives the per-parameter S (the reference).

    Args:
        inputs: List of per-layer gated inputs `a_l`, each (B, in_l).
        preact_grads: List of `dL/dh_l`, each (B, out_l), for the mean loss.
        batch_size: B.

    Returns:
        Scalar tensor ||S||_1.
    """
    total = 0.0
    for a, d in zip(inputs, preact_grads):
        b = ops.cast(batch_size, d.dtype)
        a_sq = ops.sum(ops.square(a), axis=1)  # ||a_i||^2, (B,)
        d_sq = ops.sum(ops.square(d), axis=1)  # ||d_i||^2, (B,)
        s_w = b * ops.sum(a_sq * d_sq) - ops.sum(ops.square(ops.matmul(ops.transpose(a), d)))
        s_b = b * ops.sum(d_sq) - ops.sum(ops.square(ops.sum(d, axis=0)))
        total = total + s_w + s_b
    return ops.maximum(total, 0.0)


def validate_alpha(alpha_bs):
    """Checks alpha_bs in [0, 1)."""
    try:
        value = float(alpha_bs)
    except (TypeError, ValueError):
        raise ValueError(f"`alpha_bs` must be a number in [0, 1); received {alpha_bs!r}.") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`alpha_bs` must be in [0, 1); received alpha_bs={alpha_bs!r}.")
    return value


def candidate_batch_size(batch_size, s_l1, f, alpha_bs):
    """Eq. 8: b + ceil((1 - alpha_bs) * ||S||_1 / F). A zero or invalid F leaves b unchanged."""
    if not (f > 0.0) or not math.isfinite(s_l1) or not math.isfinite(f):
        return int(batch_size)
    return int(batch_size) + int(math.ceil((1.0 - alpha_bs) * s_l1 / f))


def next_batch_size(batch_size, s_l1, f, alpha_bs, budget_bytes, num_params, input_dim):
    """Eq. 8-10: the next epoch's batch size, capped by the memory budget, never shrinking.

    Args:
        batch_size: Current batch size b.
        s_l1: ||S||_1 averaged over the epoch.
        f: Mean data loss F over the same steps.
        alpha_bs: Smoothing parameter in [0, 1).
        budget_bytes: Memory budget C in bytes.
        num_params: Stored weights + biases of the (pruned) network, N_i / 4.
        input_dim: Input width (bytes per example = 4 * input_dim).

    Returns:
        The new batch size (int).
    """
    candidate = candidate_batch_size(batch_size, s_l1, f, alpha_bs)
    cap = memory.max_batch_size(budget_bytes, num_params, input_dim)
    return max(int(batch_size), min(candidate, cap))


@keras.saving.register_keras_serializable(package="keras_dynhp")
class DynamicBatchSize:
    """Serialisable settings of DynHP's batch-size controller.

    Args:
        alpha_bs: Smoothing parameter in [0, 1); larger is slower growth.
        memory_budget: Budget C in bytes or a string such as "1433KiB".
        initial_batch_size: Batch size of the first epoch (paper: 16).
        variance_every: Measure the gradient variance every k-th step.

    Example:
        >>> DynamicBatchSize(0.98, "1433KiB").budget_bytes
        1467392
    """

    def __init__(self, alpha_bs, memory_budget, initial_batch_size=16, variance_every=1):
        self.alpha_bs = validate_alpha(alpha_bs)
        self.budget_bytes = memory.parse_bytes(memory_budget)
        if isinstance(initial_batch_size, bool) or int(initial_batch_size) != initial_batch_size \
                or initial_batch_size <= 0:
            raise ValueError(
                f"`initial_batch_size` must be a positive integer; received {initial_batch_size!r}."
            )
        self.initial_batch_size = int(initial_batch_size)
        if isinstance(variance_every, bool) or int(variance_every) != variance_every or variance_every <= 0:
            raise ValueError(f"`variance_every` must be a positive integer; received {variance_every!r}.")
        self.variance_every = int(variance_every)

    def check_fits(self, num_params, input_dim):
        """Raises ValueError if the network plus the initial batch exceed the budget."""
        need = memory.mo_bytes(num_params, self.initial_batch_size, input_dim)
        if need > self.budget_bytes:
            raise ValueError(
                f"memory_budget={self.budget_bytes} bytes ({memory.kib(self.budget_bytes):.2f} KiB) "
                f"cannot hold the network ({memory.network_bytes(num_params)} bytes) plus the initial "
                f"batch of {self.initial_batch_size} ({memory.batch_bytes(self.initial_batch_size, input_dim)}"
                f" bytes): at least {need} bytes ({memory.kib(need):.2f} KiB) are needed."
            )

    def next_batch_size(self, batch_size, s_l1, f, num_params, input_dim):
        """Eq. 8-10 with these settings."""
        return next_batch_size(batch_size, s_l1, f, self.alpha_bs, self.budget_bytes,
                               num_params, input_dim)

    def get_config(self):
        return {
            "alpha_bs": self.alpha_bs,
            "memory_budget": self.budget_bytes,
            "initial_batch_size": self.initial_batch_size,
            "variance_every": self.variance_every,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
