"""The hard-pruning decision (paper section 4.1, eq. 6-7) and its policy object.

At the end of an epoch, for every gate j of every gated layer::

    a_j = active observations / all observations            # eq. 6 (GatedLayer.activation_rates)
    keep_j = a_j >= gamma                                    # eq. 7, g(a, gamma): keep_mask
    Z = Z * keep                                             # the kept set only shrinks

:class:`HardPruning` holds the settings (gamma, the floor `min_units`, the first
epoch that prunes) as a serialisable object, like tfmot's pruning schedules;
:mod:`keras_dynhp.surgery` carries the decision out.
"""

import numbers

import keras
import numpy as np


def keep_mask(rates, gamma, min_units=1):
    """Eq. 7 with a floor: units with a_j >= gamma, at least `min_units` of them.

    When fewer than `min_units` pass the threshold, the most active ones are kept.

    Args:
        rates: Activation rates a_j (eq. 6), or None to keep everything.
        gamma: Threshold in [0, 1].
        min_units: Minimum number of units kept (>= 1).

    Returns:
        Boolean NumPy mask.

    Example:
        >>> keep_mask([0.1, 0.5, 0.9], 0.5).tolist()
        [False, True, True]
    """
    rates = np.asarray(rates, dtype="float64")
    mask = rates >= gamma
    need = min(int(min_units), rates.size)
    if mask.sum() < need:
        top = np.argsort(-rates, kind="stable")[:need]
        mask[top] = True
    return mask


@keras.saving.register_keras_serializable(package="keras_dynhp")
class HardPruning:
    """When and what hard pruning removes: units whose gate was active less than `gamma`.

    Args:
        gamma: Threshold on the activation rates, in [0, 1] (eq. 7; paper 0.5).
        min_units: No gated layer drops below this many input units (>= 1).
        start_epoch: First epoch (0-based) at whose end pruning happens.

    Example:
        >>> policy = HardPruning(gamma=0.5, min_units=2)
        >>> policy.keep([0.1, 0.3, 0.9]).tolist()
        [False, True, True]
        >>> HardPruning.from_config(policy.get_config()).min_units
        2
    """

    def __init__(self, gamma=0.5, min_units=1, start_epoch=0):
        if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"`gamma` must be in [0, 1]; received gamma={gamma!r}.")
        if isinstance(min_units, bool) or not isinstance(min_units, numbers.Real) \
                or int(min_units) != min_units or min_units < 1:
            raise ValueError(f"`min_units` must be an integer >= 1; received min_units={min_units!r}.")
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, numbers.Real) \
                or int(start_epoch) != start_epoch or start_epoch < 0:
            raise ValueError(f"`start_epoch` must be an integer >= 0; received start_epoch={start_epoch!r}.")
        self.gamma = float(gamma)
        self.min_units = int(min_units)
        self.start_epoch = int(start_epoch)

    def prunes_after(self, epoch):
        """Whether pruning happens at the end of `epoch` (0-based)."""
        return epoch >= self.start_epoch

    def keep(self, rates):
        """The kept units of one group from its activation rates (None: keep all)."""
        return keep_mask(rates, self.gamma, self.min_units)

    def get_config(self):
        return {"gamma": self.gamma, "min_units": self.min_units, "start_epoch": self.start_epoch}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
