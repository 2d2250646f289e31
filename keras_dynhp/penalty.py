"""The L0 penalty's two weightings and the expected model size (Concepts page, "L0 penalty").

A chain of gated layers l = 0..L-1: layer l has k_l gated input units and its
outputs are layer l + 1's gated inputs (k_L = the number of classes, not
gated). P_j = P(z_j > 0) (eq. 4) and E[k_l] = sum_j P_j.

* ``"louizos"`` (eq. 5 with the Louizos reference's weighting; the paper-fidelity
  setting, the default). Each gate is weighted by the weights it feeds, its
  fan-out; every layer adds its own term (`L0Dense.l0_penalty`)::

      R_louizos = sum_l lambda_l * sum_j P_j * k_{l+1} / N

* ``"size"`` (eq. 11, beyond the paper). The penalty is the expected number of
  stored weights and biases, the model size of the paper's accounting divided
  by 4 bytes. Gates are independent, so the expected kernel size is the product
  of the expected active units on its two sides::

      E[params_l] = E[k_l] * E[k_{l+1}] + E[k_{l+1}]        (dense kernel + bias)
      R_size      = sum_l lambda_l * E[params_l] / N          # eq. 11

  Removing hidden unit j of layer l then costs its fan-in, its bias and its
  fan-out (dR/dP_j = lambda * (E[k_{l-1}] + 1 + E[k_{l+1}]) / N for a common
  lambda), which is what pruning it frees.

Each layer type gives its own `params_for(inputs, outputs)` (a dense kernel is
inputs * outputs; a convolution would multiply by its kernel area); this module
chains them. It also computes what a model would *deliver* (the units that
`keras_dynhp.export.strip` keeps: present and with a non-zero inference gate),
used by the model-size budget (:mod:`keras_dynhp.budget`).
"""

import numpy as np
from keras import ops

PENALTIES = ("louizos", "size")
BYTES_PER_NUMBER = 4


def check_penalty(penalty):
    """`penalty` if it is one of `PENALTIES` ("louizos", "size"), else a ValueError."""
    if penalty not in PENALTIES:
        raise ValueError(f"Unknown `penalty`={penalty!r}; expected one of {PENALTIES}.")
    return penalty


def chain_params(layers, counts):
    """Weights + biases of a chain whose gated layers keep `counts` input units.

    Args:
        layers: The gated layers, in order.
        counts: Units per layer (numbers or tensors: expected counts give the
            expected size, eq. 11).

    Returns:
        sum_l params_l(counts[l], counts[l + 1]), the last layer's outputs being
        its `output_units`.
    """
    total = 0.0
    for i, layer in enumerate(layers):
        outputs = counts[i + 1] if i + 1 < len(layers) else layer.output_units
        total = total + layer.params_for(counts[i], outputs)
    return total


def expected_params(layers):
    """E[stored weights and biases] under the gates' distribution (a tensor; eq. 11).

    Example:
        >>> from keras_dynhp.layers import L0Dense
        >>> a, b = L0Dense(3), L0Dense(2)
        >>> a.build((None, 4)); b.build((None, 3))
        >>> bool(0 < float(expected_params([a, b])) < 4 * 3 + 3 + 3 * 2 + 2)
        True
    """
    return chain_params(layers, [layer.expected_active_units() for layer in layers])


def size_penalty(layers):
    """R_size = sum_l lambda_l * E[params_l] / N_l (eq. 11), a tensor.

    Each layer's `l0_lambda` weights its own expected parameters, so a per-layer
    lambda means the same as with the Louizos weighting; N is each layer's
    `dataset_size` (1 if unset).
    """
    expected = [layer.expected_active_units() for layer in layers]
    total = 0.0
    for i, layer in enumerate(layers):
        outputs = expected[i + 1] if i + 1 < len(layers) else layer.output_units
        weight = layer.l0_lambda / float(layer.dataset_size or 1)
        total = total + weight * layer.params_for(expected[i], outputs)
    return total


def delivered_masks(layers):
    """Per gated layer, the units a compact (stripped) model keeps: non-zero inference gate.

    As :func:`keras_dynhp.export.strip` does, a layer whose gates are all zero
    keeps its first unit rather than becoming empty.
    """
    masks = []
    for layer in layers:
        keep = ops.convert_to_numpy(layer.inference_gates()) > 0
        if not keep.any():
            keep[0] = True
        masks.append(keep)
    return masks


def delivered_params(layers):
    """Weights + biases of the compact model the layers would deliver now."""
    return int(chain_params(layers, [int(m.sum()) for m in delivered_masks(layers)]))


def smallest_params(layers, min_units):
    """Weights + biases of the chain with `min_units` units per gated layer (or fewer, if it has fewer)."""
    return int(chain_params(layers, [min(int(min_units), layer.gated_units) for layer in layers]))


def select_units(layers, scores, max_params, min_units=1, keep=None):
    """Units to keep so that the chain holds at most `max_params` weights and biases.

    The lowest-scored units go first, all layers together (ties: the unit whose
    removal frees more), skipping a layer once it is down to `min_units`.

    Args:
        layers: The gated layers, in order.
        scores: Per layer, one score per unit (higher: more worth keeping), e.g.
            the gate probabilities P(z > 0).
        max_params: The size to reach.
        min_units: No layer drops below this many units.
        keep: Per layer, the units still candidates (boolean masks; default all).

    Returns:
        Boolean masks, one per layer (a subset of `keep`).

    Raises:
        ValueError: If `max_params` cannot be reached with `min_units` per layer.
    """
    keep = [np.ones(len(s), bool) if keep is None else np.array(keep[i], bool)
            for i, s in enumerate(scores)]
    counts = [int(k.sum()) for k in keep]
    size = chain_params(layers, counts)
    if size <= max_params:
        return keep
    freed = []
    for i in range(len(layers)):  # what one unit of layer i frees now (the tie-break)
        trial = list(counts)
        trial[i] -= 1
        freed.append(size - chain_params(layers, trial))
    order = sorted((float(scores[i][j]), -freed[i], i, int(j))
                   for i, k in enumerate(keep) for j in np.flatnonzero(k))
    for _, _, i, j in order:
        if counts[i] <= min_units:
            continue
        keep[i][j] = False
        counts[i] -= 1
        size = chain_params(layers, counts)
        if size <= max_params:
            return keep
    raise ValueError(
        f"Cannot bring the network down to {int(max_params):,} weights and biases with at "
        f"least {min_units} unit(s) per gated layer.")
