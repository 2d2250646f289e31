"""The model-size budget M: deliver a network of at most M bytes (Concepts page, "Model-size budget").

Beyond the paper. DynHP's budget C bounds what training holds (network + batch);
M bounds the network training *delivers*, in the paper's accounting (4 bytes
per stored weight and bias). The mechanism, after Gallego-Posada et al. 2022
("Controlled Sparsity via Constrained Optimization"):

1. A target size that falls from the size at the start, S_0, to M by the
   deadline epoch d, along a cubic (as tfmot's `PolynomialDecay`)::

       T_e = M + (S_0 - M) * (1 - (e + 1) / (d + 1)) ** 3    for e < d;  T_e = M after  # eq. 12

2. A Lagrange multiplier mu >= 0 on the expected size E[S] = 4 * E[params]
   (eq. 11, :mod:`keras_dynhp.penalty`), added to the loss as mu * E[S] / M and
   updated by dual ascent at every training step::

       mu <- max(0, mu + eta * (E[S] / (r_e * T_e) - 1))                          # eq. 13

   T_e is a size of the *delivered* network (units with a non-zero inference
   gate, all of a unit or nothing), while E[S] counts a unit open with
   probability P as P of one: E[S] is smaller. r_e = E[S] / delivered size,
   measured at the start of epoch e, converts the target into expected bytes.

   While the expected size is above the target, mu grows and closes the gates
   whose data gradient holds them open least; once below, mu decays.
3. A guarantee: from the end of epoch d on, if the network that training
   would deliver (units present with a non-zero inference gate) is still
   larger than M, the least-probable units per byte they free are removed
   (hp, dynhp: by surgery; sp: their gates are closed) until it fits
   (:func:`keras_dynhp.penalty.select_units`). No layer drops below
   `min_units`; a budget below the smallest such network is an error before
   training.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_dynhp import memory, penalty
from keras_dynhp.layers.gates import LOG_ALPHA_RANGE

#: Default share of the epochs by whose end the budget is reached (the rest recover).
DEADLINE_FRACTION = 0.75


@keras.saving.register_keras_serializable(package="keras_dynhp")
class ModelBudget:
    """Deliver a network of at most `max_bytes` (paper accounting) by the deadline epoch.

    Args:
        max_bytes: M, in bytes or a string such as "250KB" (KB = 1000 B,
            KiB = 1024 B).
        deadline: 0-based epoch at whose end the network must fit M. None: the
            epoch `deadline_fraction` of the way through the fit's epochs
            (leaving the rest to recover accuracy).
        deadline_fraction: See `deadline`, in (0, 1].
        multiplier_lr: eta, the dual-ascent step of the multiplier per
            training step (eq. 13).
        start_bytes: S_0, the size the target schedule starts from (None: the
            network's size when training starts; `fit` fills it in).

    Example:
        >>> budget = ModelBudget("250KB", deadline=9, start_bytes=1_066_440)
        >>> budget.max_bytes, round(budget.target_bytes(0)), budget.target_bytes(9)
        (250000, 845185, 250000)
    """

    def __init__(self, max_bytes, deadline=None, deadline_fraction=DEADLINE_FRACTION,
                 multiplier_lr=0.01, start_bytes=None):
        self.max_bytes = memory.parse_bytes(max_bytes)
        if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, numbers.Integral)
                                     or deadline < 0):
            raise ValueError(f"`deadline` must be an epoch index >= 0 or None; received {deadline!r}.")
        if isinstance(deadline_fraction, bool) or not isinstance(deadline_fraction, numbers.Real) \
                or not 0.0 < float(deadline_fraction) <= 1.0:
            raise ValueError(f"`deadline_fraction` must be in (0, 1]; received {deadline_fraction!r}.")
        if isinstance(multiplier_lr, bool) or not isinstance(multiplier_lr, numbers.Real) \
                or not math.isfinite(multiplier_lr) or multiplier_lr < 0:
            raise ValueError(f"`multiplier_lr` must be a finite number >= 0; received {multiplier_lr!r}.")
        self.deadline = None if deadline is None else int(deadline)
        self.deadline_fraction = float(deadline_fraction)
        self.multiplier_lr = float(multiplier_lr)
        self.start_bytes = None if start_bytes is None else memory.parse_bytes(start_bytes)

    @classmethod
    def get(cls, value):
        """A ModelBudget from a ModelBudget, a number of bytes or a size string (None stays None)."""
        if value is None or isinstance(value, cls):
            return value
        return cls(value)

    def resolve(self, epochs, start_bytes):
        """Fills in the deadline (from `epochs`) and S_0, where they were left to `fit`."""
        if self.deadline is None:
            self.deadline = max(int(math.ceil(self.deadline_fraction * epochs)) - 1, 0)
        if self.start_bytes is None:
            self.start_bytes = int(start_bytes)

    def target_bytes(self, epoch):
        """T_e, the expected size aimed at during epoch `epoch` (eq. 12)."""
        if self.deadline is None or self.start_bytes is None:
            raise ValueError("Call `resolve` (fit does) before asking for targets.")
        if epoch >= self.deadline or self.start_bytes <= self.max_bytes:
            return float(self.max_bytes)
        left = 1.0 - (epoch + 1.0) / (self.deadline + 1.0)
        return self.max_bytes + (self.start_bytes - self.max_bytes) * left ** 3

    def enforced_after(self, epoch):
        """Whether the network must fit at the end of `epoch` (the deadline and later)."""
        return self.deadline is not None and epoch >= self.deadline

    def check_feasible(self, layers, min_units):
        """A clear error if no network with `min_units` per gated layer fits the budget."""
        smallest = memory.network_bytes(penalty.smallest_params(layers, min_units))
        if smallest > self.max_bytes:
            raise ValueError(
                f"model_budget={self.max_bytes:,} bytes cannot be met: the smallest network this model "
                f"can become, with min_units={min_units} unit(s) per gated layer, stores {smallest:,} bytes "
                "(4 bytes per weight and bias). Raise the budget or lower min_units.")

    def get_config(self):
        return {"max_bytes": self.max_bytes, "deadline": self.deadline,
                "deadline_fraction": self.deadline_fraction, "multiplier_lr": self.multiplier_lr,
                "start_bytes": self.start_bytes}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def expected_target(model, target_bytes):
    """r_e * T_e: a delivered-size target in expected bytes (eq. 13), r_e from the model now."""
    delivered = model.delivered_bytes()
    ratio = model.expected_bytes() / delivered if delivered > 0 else 1.0
    return float(target_bytes) * min(max(ratio, 1e-3), 1.0)


def enforce(model, budget, min_units, hard):
    """Brings the delivered network within `budget.max_bytes` (step 3 of the module docstring).

    Args:
        model: A DynHPModel.
        budget: The :class:`ModelBudget`.
        min_units: No gated layer drops below this many units.
        hard: Remove the units physically (hp, dynhp) or close their gates (sp).

    Returns:
        The number of units removed or closed (0 when the network already fits).
    """
    layers = model.gated_layers
    delivered = penalty.delivered_masks(layers)
    if memory.network_bytes(penalty.chain_params(layers, [int(m.sum()) for m in delivered])) \
            <= budget.max_bytes:
        return 0
    scores = [ops.convert_to_numpy(layer.gate_probability()) for layer in layers]
    keep = penalty.select_units(layers, scores, budget.max_bytes // memory.BYTES_PER_NUMBER,
                                min_units, keep=delivered)
    removed = sum(int(d.sum() - k.sum()) for d, k in zip(delivered, keep))
    if hard:
        from keras_dynhp import surgery

        surgery.remove_units(model, keep)
    else:
        for layer, k in zip(layers, keep):
            log_alpha = ops.convert_to_numpy(layer.log_alpha)
            layer.log_alpha.assign(np.where(k, log_alpha, LOG_ALPHA_RANGE[0]).astype(log_alpha.dtype))
    return removed
