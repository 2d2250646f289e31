"""The model-size budget M: deliver a network of at most M bytes (Concepts page, "Model-size budget").

Beyond the paper. DynHP's budget C bounds what training holds (network + batch);
M bounds the network training *delivers*, in the paper's accounting (4 bytes
per stored weight and bias): the compact model of `keras_dynhp.strip`, i.e.
the units present whose inference gate is non-zero. The mechanism:

1. A target size that falls from the size at the start, S_0, to M by the
   deadline epoch d, along a cubic (as tfmot's `PolynomialDecay`)::

       T_e = M + (S_0 - M) * (1 - (e + 1) / (d + 1)) ** 3    for e < d;  T_e = M after  # eq. 12

2. At the end of every epoch e, after hard pruning (eq. 7), if the delivered
   network is larger than T_e, the units with the lowest P(z > 0) (eq. 4),
   all layers together, are removed until it fits (hp, dynhp: by surgery;
   sp: their gates are closed, so `strip` drops them), never below
   `min_units` per layer (:func:`keras_dynhp.penalty.select_units`). The L0
   penalty (best the size penalty, eq. 11) is what ranks the units: it has
   been lowering the gates of the units the data needs least. Hard pruning
   itself may not take the network below T_e in one epoch before the
   deadline: of the units it would remove, the most active are kept until the
   size is T_e (:func:`limit_pruning`). From the deadline on T_e = M, so the
   delivered network fits M at the end, guaranteed. A budget below the
   smallest network with `min_units` per layer is an error before training.
3. Recovery (`recover=True`; off by default): the epochs after the deadline
   train the network that will be delivered, with the deterministic inference
   gates instead of sampled ones (no gate noise, no further hard pruning by
   eq. 7; step 2 still holds at every epoch end). Measured over 100 epochs
   (Fashion-MNIST, 0.14 MB, validation split), the small network then
   overfits (training error 0.7 %, validation 11.58 %) where the gate noise
   kept to the end regularises it (2.7 %, 10.92 %): docs/reproduction.md.
4. Optional (`multiplier_lr > 0`; off by default): a Lagrange multiplier
   mu >= 0 on the expected size E[S] = 4 * E[params] (eq. 11), after
   Gallego-Posada et al. 2022, added to the loss as mu * E[S] / M and updated
   by dual ascent at every training step (K steps per epoch, violation clipped
   to [-1, 1])::

       mu <- max(0, mu + (eta / K) * clip(E[S] / (r_e * T_e) - 1, -1, 1))         # eq. 13

   r_e = E[S] / delivered size at the start of epoch e converts the delivered
   target into expected bytes. Measured on Fashion-MNIST (HP, batch 100,
   20 epochs, M = 250 KB), the multiplier winds up while hard pruning lags the
   target, then closes far more gates than needed (77 KB delivered), which is
   why the projection of step 2 is the default.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_dynhp import memory, penalty
from keras_dynhp.layers.gates import LOG_ALPHA_RANGE

#: Default share of the epochs by whose end the budget is reached (the rest train it): early,
#: so that the small network trains longest and the training memory (the area under the
#: per-epoch curve) stays low (docs/reproduction.md, "Choosing the defaults").
DEADLINE_FRACTION = 0.25


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
        multiplier_lr: eta, the dual-ascent rate of the optional multiplier
            per epoch (eq. 13; 0, the default, turns it off): mu moves by at most
            eta in one epoch.
        start_bytes: S_0, the size the target schedule starts from (None: the
            network's size when training starts; `fit` fills it in).
        recover: Train the epochs after the deadline with the deterministic
            gates (step 3 above; default False: the gate noise regularises
            the small network to the end).

    `fit` fills in the deadline and S_0 when they are None, and the object keeps
    them (as :class:`~keras_dynhp.batch_size.DynamicBatchSize` keeps its batch),
    so passing the same object to successive or resumed fits follows one
    schedule. A fit that ends before the deadline leaves the network above M
    and warns (a `PruningWarning`).

    Example:
        >>> budget = ModelBudget("250KB", deadline=9, start_bytes=1_066_440)
        >>> budget.max_bytes, round(budget.target_bytes(0)), budget.target_bytes(9)
        (250000, 845185, 250000.0)
    """

    def __init__(self, max_bytes, deadline=None, deadline_fraction=DEADLINE_FRACTION,
                 multiplier_lr=0.0, start_bytes=None, recover=False):
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
        self.recover = bool(recover)

    @classmethod
    def get(cls, value):
        """A ModelBudget from a ModelBudget, a number of bytes or a size string (None stays None)."""
        if value is None or isinstance(value, cls):
            return value
        return cls(value)

    def resolve(self, epochs, start_bytes):
        """Fills in the deadline (from `epochs`) and S_0, where they were left to `fit`."""
        if self.deadline is None:
            self.deadline = max(math.ceil(self.deadline_fraction * epochs) - 1, 0)
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

    def recovering(self, epoch):
        """Whether `epoch` is a recovery epoch (after the deadline, with `recover`)."""
        return self.recover and self.deadline is not None and epoch > self.deadline

    def enforced_after(self, epoch):
        """Whether the network must fit M at the end of `epoch` (the deadline and later)."""
        return self.deadline is not None and epoch >= self.deadline

    @property
    def uses_multiplier(self):
        """Whether the optional multiplier of eq. 13 is on."""
        return self.multiplier_lr > 0

    def check_feasible(self, layers, min_units, links=None):
        """A clear error if no network with `min_units` per gated layer fits the budget."""
        smallest = memory.network_bytes(penalty.smallest_params(layers, min_units, links))
        if smallest > self.max_bytes:
            raise ValueError(
                f"model_budget={self.max_bytes:,} bytes cannot be met: the smallest network this model "
                f"can become, with min_units={min_units} unit(s) per gated layer, stores {smallest:,} bytes "
                "(4 bytes per weight and bias). Raise the budget or lower min_units.")

    def get_config(self):
        return {"max_bytes": self.max_bytes, "deadline": self.deadline,
                "deadline_fraction": self.deadline_fraction, "multiplier_lr": self.multiplier_lr,
                "start_bytes": self.start_bytes, "recover": self.recover}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def expected_target(model, target_bytes):
    """r_e * T_e: a delivered-size target in expected bytes (eq. 13), r_e from the model now."""
    delivered = model.delivered_bytes()
    ratio = model.expected_bytes() / delivered if delivered > 0 else 1.0
    return float(target_bytes) * min(max(ratio, 1e-3), 1.0)


def limit_pruning(layers, keep, rates, min_params, links=None):
    """Keep masks of hard pruning, with units put back (most active first) until `min_params`.

    Args:
        layers: The gated layers.
        keep: Eq. 7's masks, one per layer (None: keep all).
        rates: Activation rates per layer (None where not observed).
        min_params: The fewest weights and biases the pruned chain may store.
        links: How each layer's inputs read the previous layer's outputs
            (:func:`keras_dynhp.penalty.unit_counts`).

    Returns:
        The masks (copies; None stays None).
    """
    keep = [None if k is None else np.array(k, bool) for k in keep]
    full = [np.ones(layer.gated_units, bool) if k is None else k for layer, k in zip(layers, keep)]
    size = penalty.ChainSize(layers, full, links)
    if size.params() >= min_params:
        return keep
    candidates = sorted(((-float(rates[i][j]), i, j) for i, k in enumerate(full) if rates[i] is not None
                         for j in np.flatnonzero(~k)))
    for _, i, j in candidates:
        size.set(i, j, True)
        if size.params() >= min_params:
            break
    return [None if k is None else size.masks[i] for i, k in enumerate(keep)]


def enforce(model, max_bytes, min_units, hard):
    """Brings the delivered network within `max_bytes` (step 2 of the module docstring).

    Args:
        model: A DynHPModel.
        max_bytes: The size to fit (T_e of eq. 12; M from the deadline on).
        min_units: No gated layer drops below this many units.
        hard: Remove the units physically (hp, dynhp) or close their gates (sp).

    Returns:
        The number of units removed or closed (0 when the network already fits).
    """
    layers, links = model.gated_layers, model.links()
    delivered = penalty.delivered_masks(layers)
    if memory.network_bytes(penalty.masks_params(layers, delivered, links)) <= max_bytes:
        return 0
    scores = [layer.gate_probability(numpy=True) for layer in layers]
    keep = penalty.select_units(layers, scores, int(max_bytes) // memory.BYTES_PER_NUMBER,
                                min_units, keep=delivered, links=links)
    removed = sum(int(d.sum() - k.sum()) for d, k in zip(delivered, keep))
    if hard:
        from keras_dynhp import surgery

        surgery.remove_units(model, keep)
    else:
        for layer, k in zip(layers, keep):
            if not layer.gate_inputs:
                continue
            log_alpha = ops.convert_to_numpy(layer.log_alpha)
            layer.log_alpha.assign(np.where(k, log_alpha, LOG_ALPHA_RANGE[0]).astype(log_alpha.dtype))
    return removed
