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
import numbers

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


def dense_variance_l1(a, d, batch_size):
    """sum(S_W) + sum(S_b) of one dense layer, without forming the (in, out) variance.

    Args:
        a: The layer's (gated) inputs, (B, in).
        d: Gradient of the mean batch loss w.r.t. its pre-activations, (B, out).
        batch_size: B.

    Returns:
        Scalar tensor (see :func:`gradient_variance_l1` for the formula).
    """
    b = ops.cast(batch_size, d.dtype)
    a_sq = ops.sum(ops.square(a), axis=1)  # ||a_i||^2, (B,)
    d_sq = ops.sum(ops.square(d), axis=1)  # ||d_i||^2, (B,)
    s_w = b * ops.sum(a_sq * d_sq) - ops.sum(ops.square(ops.matmul(ops.transpose(a), d)))
    s_b = b * ops.sum(d_sq) - ops.sum(ops.square(ops.sum(d, axis=0)))
    return s_w + s_b


def conv_variance_l1(patches, d, batch_size):
    """sum(S_W) + sum(S_b) of one convolution, exactly, from its input patches (eq. 8's S).

    A convolution's per-example kernel gradient is not an outer product but a
    sum over the P output positions: with `X_i` example i's patches (P, K),
    K = kh * kw * channels, and `D_i` its pre-activation gradients (P, F)::

        g_i = B * X_i^T D_i                                     # (K, F)
        sum(S_W) = B * sum_i ||X_i^T D_i||_F^2 - ||sum_i X_i^T D_i||_F^2
        sum(S_b) = B * sum_i ||sum_p D_i[p]||^2 - ||sum_i sum_p D_i[p]||^2

    ||X_i^T D_i||_F^2 is computed one of two exact ways, whichever holds fewer
    numbers per example: the per-example gradient itself (K * F numbers), or
    the identity ||X^T D||_F^2 = sum_pq (X X^T)_pq (D D^T)_pq with two P x P
    Gram matrices (LeNet-5's second convolution: K * F = 25,000, P * P = 4,096).
    With P = 1 both reduce to :func:`dense_variance_l1`.

    Args:
        patches: `(B, P, K)` input patches (after gating), in any fixed order of K.
        d: `(B, P, F)` gradient of the mean batch loss w.r.t. the pre-activations.
        batch_size: B.

    Returns:
        Scalar tensor.
    """
    b = ops.cast(batch_size, d.dtype)
    positions, k, f = patches.shape[1], patches.shape[2], d.shape[2]
    if k * f <= 2 * positions * positions:
        per_example = ops.einsum("bpk,bpf->bkf", patches, d)
        sum_sq = ops.sum(ops.square(per_example))
        total = ops.sum(per_example, axis=0)
    else:
        gram_x = ops.einsum("bpk,bqk->bpq", patches, patches)
        gram_d = ops.einsum("bpf,bqf->bpq", d, d)
        sum_sq = ops.sum(gram_x * gram_d)
        total = ops.einsum("bpk,bpf->kf", patches, d)
    s_w = b * sum_sq - ops.sum(ops.square(total))
    d_sum = ops.sum(d, axis=1)  # (B, F): the per-example bias gradient / B
    s_b = b * ops.sum(ops.square(d_sum)) - ops.sum(ops.square(ops.sum(d_sum, axis=0)))
    return s_w + s_b


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
        total = total + dense_variance_l1(a, d, batch_size)
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


def next_batch_size(batch_size, s_l1, f, alpha_bs, budget_bytes, num_params, example_size,
                    footprint=None, multiple_of=1):
    """Eq. 8-10: the next epoch's batch size, capped by the memory budget, never shrinking.

    Args:
        batch_size: Current batch size b.
        s_l1: ||S||_1 averaged over the epoch.
        f: Mean data loss F over the same steps.
        alpha_bs: Smoothing parameter in [0, 1).
        budget_bytes: Memory budget C in bytes.
        num_params: Stored weights + biases of the (pruned) network, N_i / 4.
        example_size: Numbers per input example (bytes per example = 4 * example_size).
        footprint: Optional `(fixed_bytes, per_example_bytes)` of another
            accounting (:func:`keras_dynhp.memory.footprint`, "full"): the cap
            is then floor((C - fixed) / per_example) instead of eq. 10's.
        multiple_of: The batch stays a multiple of this (the devices sharing
            each batch under data parallelism): the candidate is rounded up to
            one (a growth of a few examples still grows the batch) and the cap
            down (the budget still holds).

    Returns:
        The new batch size (int).
    """
    candidate = candidate_batch_size(batch_size, s_l1, f, alpha_bs)
    if footprint is None:
        cap = memory.max_batch_size(budget_bytes, num_params, example_size)
    else:
        fixed, per_example = footprint
        cap = max((int(budget_bytes) - int(fixed)) // int(per_example), 0)
    k = int(multiple_of)
    grown = -(-candidate // k) * k  # a growth of the candidate moves to the next multiple
    return max(int(batch_size), min(grown, cap // k * k))


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or int(value) != value or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer; received {value!r}.")
    return int(value)


@keras.saving.register_keras_serializable(package="keras_dynhp")
class FixedBatchSize:
    """Batch policy of `sp` and `hp`: the same batch size every epoch.

    Args:
        batch_size: The batch size.

    Example:
        >>> FixedBatchSize(128).get_config()
        {'batch_size': 128}
    """

    measures_variance = False
    variance_every = None
    accounting = "paper"  # no budget: nothing to count

    def __init__(self, batch_size=32):
        self.batch_size = _positive_int("batch_size", batch_size)

    def check_fits(self, num_params, example_size, footprint=None):
        """Nothing to check: a fixed batch has no budget."""

    def update(self, s_l1, f, num_params, example_size, footprint=None):
        """Returns the (unchanged) batch size of the next epoch."""
        return self.batch_size

    def get_config(self):
        return {"batch_size": self.batch_size}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


#: The default alpha_bs of `fit` and the CLI: the best measured (slow growth keeps the training
#: memory low; docs/reproduction.md, "Choosing the defaults"). The paper's are 0.971-0.989.
DEFAULT_ALPHA_BS = 0.998


@keras.saving.register_keras_serializable(package="keras_dynhp")
class DynamicBatchSize:
    """DynHP's batch policy: grow the batch from gradient variance under a budget (eq. 8-10).

    The policy holds the *current* batch size: :meth:`update` moves it to the
    next epoch's, and `get_config` stores it, so a resumed run restores it.

    Args:
        alpha_bs: Smoothing parameter in [0, 1); larger is slower growth.
        memory_budget: Budget C in bytes or a string such as "1433KiB".
        initial_batch_size: Batch size of the first epoch (paper: 16).
        variance_every: Measure the gradient variance every k-th step.
        batch_size: The current batch size (default: `initial_batch_size`).
        accounting: What the budget counts: "paper" (weights and biases plus one
            input batch, eq. 9-10) or "full" (also the gates, gradients,
            optimizer slots and the batch's activations:
            :func:`keras_dynhp.memory.full_accounting`).
        multiple_of: Every batch is a multiple of this (default 1). `fit` sets
            it to the number of devices that share a batch under a
            `keras.distribution` (data parallelism on JAX).

    Example:
        >>> DynamicBatchSize(0.98, "1433KiB").budget_bytes
        1467392
    """

    measures_variance = True

    def __init__(self, alpha_bs, memory_budget, initial_batch_size=16, variance_every=1,
                 batch_size=None, accounting="paper", multiple_of=1):
        self.multiple_of = _positive_int("multiple_of", multiple_of)
        if accounting not in memory.ACCOUNTINGS:
            raise ValueError(f"`accounting` must be one of {memory.ACCOUNTINGS}; received {accounting!r}.")
        self.accounting = accounting
        self.alpha_bs = validate_alpha(alpha_bs)
        self.budget_bytes = memory.parse_bytes(memory_budget)
        self.initial_batch_size = _positive_int("initial_batch_size", initial_batch_size)
        self.variance_every = _positive_int("variance_every", variance_every)
        self.batch_size = self.initial_batch_size if batch_size is None else _positive_int(
            "batch_size", batch_size)

    def check_fits(self, num_params, example_size, footprint=None):
        """Raises ValueError if the network plus the current batch exceed the budget.

        `footprint`: `(fixed_bytes, per_example_bytes)` in this policy's
        accounting when it is "full" (:func:`keras_dynhp.memory.footprint`).
        """
        if footprint is not None:
            fixed, per_example = footprint
            need = int(fixed) + self.batch_size * int(per_example)
            if need > self.budget_bytes:
                raise ValueError(
                    f"memory_budget={self.budget_bytes} bytes ({memory.kib(self.budget_bytes):.2f} KiB) "
                    f"cannot hold a training step in the {self.accounting} accounting: {fixed} bytes "
                    f"(weights, gates, gradients, optimizer slots) plus {per_example} bytes per example "
                    f"for the initial batch of {self.batch_size}: at least {need} bytes "
                    f"({memory.kib(need):.2f} KiB) are needed.")
            return
        need = memory.mo_bytes(num_params, self.batch_size, example_size)
        if need > self.budget_bytes:
            raise ValueError(
                f"memory_budget={self.budget_bytes} bytes ({memory.kib(self.budget_bytes):.2f} KiB) "
                f"cannot hold the network ({memory.network_bytes(num_params)} bytes) plus the initial "
                f"batch of {self.batch_size} ({memory.batch_bytes(self.batch_size, example_size)}"
                f" bytes): at least {need} bytes ({memory.kib(need):.2f} KiB) are needed."
            )

    def next_batch_size(self, batch_size, s_l1, f, num_params, example_size, footprint=None):
        """Eq. 8-10 with these settings, from `batch_size` (does not change the policy)."""
        return next_batch_size(batch_size, s_l1, f, self.alpha_bs, self.budget_bytes,
                               num_params, example_size, footprint, self.multiple_of)

    def update(self, s_l1, f, num_params, example_size, footprint=None):
        """Moves to the next epoch's batch size (eq. 8-10) and returns it."""
        self.batch_size = self.next_batch_size(self.batch_size, s_l1, f, num_params, example_size,
                                               footprint)
        return self.batch_size

    def get_config(self):
        return {
            "alpha_bs": self.alpha_bs,
            "memory_budget": self.budget_bytes,
            "initial_batch_size": self.initial_batch_size,
            "variance_every": self.variance_every,
            "batch_size": self.batch_size,
            "accounting": self.accounting,
            "multiple_of": self.multiple_of,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
