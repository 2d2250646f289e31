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
inputs * outputs; a convolution multiplies by its kernel area); this module
chains them. Between a convolution and a dense layer after `Flatten`, the dense
layer's gates sit on single features (H * W per channel) and the channel is
stored while any of its features is::

      E[channels] = sum_c (1 - prod_{j in c} (1 - P_j))                       # eq. 11, across Flatten

(:func:`expected_counts`; the "links" of :func:`unit_counts`). It also computes what a model would *deliver* (the units that
`keras_dynhp.export.strip` keeps: present and with a non-zero inference gate),
used by the model-size budget (:mod:`keras_dynhp.budget`).
"""

import numpy as np
from keras import ops

from keras_dynhp.layers.gates import NumpyOps

PENALTIES = ("louizos", "size")
BYTES_PER_NUMBER = 4

#: The library's default weighting: the best measured (docs/reproduction.md, "Choosing the defaults").
DEFAULT_PENALTY = "size"
#: What each weighting comes with where `l0_lambda` / `droprate_init` are left to the library
#: (`build_mlp`, `build_lenet5`, `prune`): "size" the best settings measured, "louizos" the
#: paper's own (lambda 0.01, drop rate 0.5), so `penalty="louizos"` alone is the paper's model.
SETTINGS = {
    "size": {"l0_lambda": 0.001, "droprate_init": 0.2},
    "louizos": {"l0_lambda": 0.01, "droprate_init": 0.5},
}


def check_penalty(penalty):
    """`penalty` if it is one of `PENALTIES` ("louizos", "size"), else a ValueError."""
    if penalty not in PENALTIES:
        raise ValueError(f"Unknown `penalty`={penalty!r}; expected one of {PENALTIES}.")
    return penalty


def resolve_settings(penalty, l0_lambda=None, droprate_init=None):
    """`(penalty, l0_lambda, droprate_init)` with the values left as None taken from :data:`SETTINGS`.

    Example:
        >>> resolve_settings("size"), resolve_settings("louizos", droprate_init=0.3)
        (('size', 0.001, 0.2), ('louizos', 0.01, 0.3))
    """
    settings = SETTINGS[check_penalty(penalty)]
    return (penalty, settings["l0_lambda"] if l0_lambda is None else l0_lambda,
            settings["droprate_init"] if droprate_init is None else droprate_init)


def owners_of(links, i):
    """The link into gated layer `i` (None: identity, its input j is the producer's output j)."""
    return None if links is None else links[i]


def unit_counts(layers, masks, links=None):
    """Input and output units per layer of the chain that keeps the `masks` units.

    Args:
        layers: The gated layers, in order.
        masks: Per layer, a boolean mask over its current input units.
        links: Per layer, None (its input unit j is the previous layer's output
            unit j) or an int array: `links[i][j]` is the previous layer's
            output unit (channel) that input j of layer i comes from (a dense
            layer after `Flatten` reads each channel at H * W positions).

    Returns:
        `(inputs, outputs)`: lists of ints. A producer keeps the output units
        some kept input of its consumer reads; the last layer all its outputs.
    """
    inputs = [int(np.sum(m)) for m in masks]
    return inputs, _outputs(layers, inputs, links, lambda i, owners: int(
        np.unique(np.asarray(owners)[np.asarray(masks[i], bool)]).size))


def _outputs(layers, inputs, links, across):
    """Output units per layer: the next layer's inputs, `across(i, owners)` after a Flatten, or the classes."""
    outputs = []
    for i, layer in enumerate(layers):
        if i + 1 == len(layers):
            outputs.append(layer.output_units)
        elif owners_of(links, i + 1) is None:
            outputs.append(inputs[i + 1])
        else:
            outputs.append(across(i + 1, links[i + 1]))
    return outputs


def network_params(layers, inputs, outputs):
    """sum_l params_l(inputs[l], outputs[l]) (numbers or tensors)."""
    total = 0.0
    for layer, n_in, n_out in zip(layers, inputs, outputs):
        total = (total + layer.params_for(n_in, n_out) + output_channel_params(layer) * n_out
                 + getattr(layer, "output_fixed_params", 0))
    return total


def output_channel_params(layer):
    """Numbers stored per output unit of `layer` by the per-channel layers after it (BatchNormalization,
    depthwise kernels: `GatedLayer.output_channel_params`, set by the model; 0 without any)."""
    return getattr(layer, "output_channel_params", 0)


def chain_params(layers, counts):
    """Weights + biases of a chain of identity links whose gated layers keep `counts` input units.

    Args:
        layers: The gated layers, in order.
        counts: Units per layer (numbers or tensors: expected counts give the
            expected size, eq. 11).

    Returns:
        sum_l params_l(counts[l], counts[l + 1]), the last layer's outputs being
        its `output_units`.
    """
    outputs = list(counts[1:]) + [layers[-1].output_units]
    return network_params(layers, counts, outputs)


def masks_params(layers, masks, links=None):
    """Weights + biases of the chain that keeps the `masks` units (see :func:`unit_counts`)."""
    return network_params(layers, *unit_counts(layers, masks, links))


def expected_counts(layers, links=None, numpy=False):
    """E[input units] and E[output units] per layer under the gates' distribution (tensors).

    Across an identity link the producer's expected outputs are its
    consumer's E[k] = sum_j P_j. Across a link of several inputs per output
    unit (a channel read at H * W positions after `Flatten`), the channel is
    stored while any of its inputs is on: with independent gates,
    E[channels] = sum_c (1 - prod_{j in c} (1 - P_j)).

    `numpy=True`: NumPy values, computed without the backend (the bookkeeping
    between epochs: no compilation for new layer widths).
    """
    xp = NumpyOps if numpy else ops
    probs = [layer.gate_probability(numpy) for layer in layers]
    inputs = [xp.sum(p) for p in probs]
    outputs = []
    for i, layer in enumerate(layers):
        if i + 1 == len(layers):
            outputs.append(layer.output_units)
            continue
        owners = owners_of(links, i + 1)
        if owners is None:
            outputs.append(inputs[i + 1])
            continue
        owners = np.asarray(owners)
        one_hot = np.zeros((owners.size, layer.output_units), "float32")
        one_hot[np.arange(owners.size), owners] = 1.0
        log_off = xp.log(xp.maximum(1.0 - probs[i + 1], 1e-12))  # log P(input j off)
        all_off = xp.exp(xp.matmul(log_off[None, :], one_hot))[0]  # prod over each channel
        outputs.append(xp.sum(1.0 - all_off))
    return inputs, outputs


def expected_params(layers, links=None, numpy=False):
    """E[stored weights and biases] under the gates' distribution (a tensor, or NumPy; eq. 11).

    Example:
        >>> from keras_dynhp.layers import L0Dense
        >>> a, b = L0Dense(3), L0Dense(2)
        >>> a.build((None, 4)); b.build((None, 3))
        >>> bool(0 < float(expected_params([a, b])) < 4 * 3 + 3 + 3 * 2 + 2)
        True
    """
    return network_params(layers, *expected_counts(layers, links, numpy))


def size_penalty(layers, links=None, numpy=False):
    """R_size = sum_l lambda_l * E[params_l] / N_l (eq. 11), a tensor.

    Each layer's `l0_lambda` weights its own expected parameters, so a per-layer
    lambda means the same as with the Louizos weighting; N is each layer's
    `dataset_size` (1 if unset). `links`: see :func:`unit_counts`; `numpy`: see
    :func:`expected_counts`.
    """
    inputs, outputs = expected_counts(layers, links, numpy)
    total = 0.0
    for layer, n_in, n_out in zip(layers, inputs, outputs):
        weight = layer.l0_lambda / float(layer.dataset_size or 1)
        total = total + weight * (layer.params_for(n_in, n_out) + output_channel_params(layer) * n_out)
    return total


def delivered_masks(layers):
    """Per gated layer, the units a compact (stripped) model keeps: non-zero inference gate.

    As :func:`keras_dynhp.export.strip` does, a layer whose gates are all zero
    keeps its first unit rather than becoming empty.
    """
    masks = []
    for layer in layers:
        keep = layer.inference_gates(numpy=True) > 0
        if not keep.any():
            keep[0] = True
        masks.append(keep)
    return masks


def delivered_params(layers, links=None):
    """Weights + biases of the compact model the layers would deliver now."""
    return int(masks_params(layers, delivered_masks(layers), links))


def smallest_params(layers, min_units, links=None):
    """Weights + biases of the chain with `min_units` units per gated layer (or fewer, if it has fewer).

    Across a link of several inputs per channel the fewest channels that hold
    them are counted.
    """
    inputs = [min(int(min_units), layer.gated_units) if layer.gate_inputs else layer.gated_units
              for layer in layers]
    outputs = _outputs(layers, inputs, links, lambda i, owners: max(
        1, -(-inputs[i] // int(np.bincount(np.asarray(owners)).max()))))
    return int(network_params(layers, inputs, outputs))


class ChainSize:
    """The size of a chain under keep masks, updated unit by unit (for the greedy selections).

    Args:
        layers: The gated layers.
        masks: Boolean masks per layer (copied).
        links: See :func:`unit_counts`.
    """

    def __init__(self, layers, masks, links=None):
        self.layers = layers
        self.masks = [np.array(m, bool) for m in masks]
        self.links = [owners_of(links, i) for i in range(len(layers))]
        self.inputs = [int(m.sum()) for m in self.masks]
        # Per link, how many kept inputs read each producer unit.
        self.readers = [None if o is None else np.bincount(np.asarray(o)[self.masks[i]],
                                                           minlength=layers[i - 1].output_units)
                        for i, o in enumerate(self.links)]

    def outputs(self):
        out = []
        for i, layer in enumerate(self.layers):
            if i + 1 == len(self.layers):
                out.append(layer.output_units)
            elif self.readers[i + 1] is None:
                out.append(self.inputs[i + 1])
            else:
                out.append(int((self.readers[i + 1] > 0).sum()))
        return out

    def params(self):
        return network_params(self.layers, self.inputs, self.outputs())

    def set(self, i, j, on):
        """Keeps (`on`) or drops unit j of layer i."""
        if bool(self.masks[i][j]) == bool(on):
            return
        self.masks[i][j] = bool(on)
        step = 1 if on else -1
        self.inputs[i] += step
        if self.readers[i] is not None:
            self.readers[i][self.links[i][j]] += step

    def freed_by_one(self, i):
        """What dropping one kept unit of layer i frees now (the tie-break of the selection)."""
        kept = np.flatnonzero(self.masks[i])
        if not len(kept):
            return 0.0
        before = self.params()
        self.set(i, kept[0], False)
        after = self.params()
        self.set(i, kept[0], True)
        return before - after


def select_units(layers, scores, max_params, min_units=1, keep=None, links=None):
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
        links: See :func:`unit_counts`.

    Returns:
        Boolean masks, one per layer (a subset of `keep`).

    Raises:
        ValueError: If `max_params` cannot be reached with `min_units` per layer.
    """
    keep = [np.ones(len(s), bool) if keep is None else np.array(keep[i], bool)
            for i, s in enumerate(scores)]
    size = ChainSize(layers, keep, links)
    if size.params() <= max_params:
        return keep
    freed = [size.freed_by_one(i) for i in range(len(layers))]
    order = sorted((float(scores[i][j]), -freed[i], i, int(j))
                   for i, k in enumerate(keep) for j in np.flatnonzero(k))
    for _, _, i, j in order:
        if size.inputs[i] <= min_units or not layers[i].gate_inputs:
            continue
        size.set(i, j, False)
        if size.params() <= max_params:
            return size.masks
    raise ValueError(
        f"Cannot bring the network down to {int(max_params):,} weights and biases with at "
        f"least {min_units} unit(s) per gated layer.")
