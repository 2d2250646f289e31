"""Memory accounting in the paper's units (Concepts page, "Memory accounting").

Per epoch the paper counts the memory occupation ("MO") of the network and of
one mini-batch, 4 bytes (float32) per number::

    MO = 4 * (weights and biases of the network + batch_size * example_size)

Weights and biases are the entries *stored* by the network (after hard pruning
the matrices are physically smaller); gate parameters are not counted, as in
the paper (LeNet-300-100 = 266,610 numbers). "Training memory" is the sum of MO
over all epochs. The paper's "MBytes" are KiB / 1000 for the model size
(266,610 * 4 B = 1,041.4 KiB -> 1.041), but its "Training Memory" column is the
sum over epochs in KiB / 1e6 (2000 * 2,609.45 KiB -> 5.219): the two columns
differ by a factor 1000. :func:`paper_mbytes` and :func:`paper_training_mbytes`
reproduce each column.

These are accounting figures, not what a process really uses;
:func:`peak_rss_bytes` reports the latter, and both should be shown with
honest labels. :func:`full_accounting` (eq. 14) counts, beside the paper's
figure, the tensors a training step holds: gates, gradients, optimizer slots
and the batch's activations; `fit(..., accounting="full")` makes DynHP's
budget count them (:func:`footprint`).

Example:
    >>> mo_bytes(266_610, 512, 784) / 1024
    2609.4453125
    >>> round(paper_training_mbytes(2000 * mo_bytes(266_610, 512, 784)), 3)
    5.219
    >>> round(paper_mbytes(network_bytes(266_610)), 3)
    1.041
"""

import math
import re
import resource
import sys

BYTES_PER_NUMBER = 4  # float32

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def network_bytes(num_params):
    """Bytes of the network: 4 * (stored weights + biases)."""
    return BYTES_PER_NUMBER * int(num_params)


def batch_bytes(batch_size, example_size):
    """Bytes of one mini-batch of inputs: 4 * batch_size * example_size.

    `example_size` is the number of input numbers of one example (784 for a
    flattened 28x28 image; the product of the input shape in general).
    """
    return BYTES_PER_NUMBER * int(batch_size) * int(example_size)


def mo_bytes(num_params, batch_size, example_size):
    """Memory occupation of one epoch: network bytes + batch bytes."""
    return network_bytes(num_params) + batch_bytes(batch_size, example_size)


def max_batch_size(budget_bytes, num_params, example_size):
    """Largest batch that fits beside the network: floor((C - N) / bytes per example) (eq. 10)."""
    free = int(budget_bytes) - network_bytes(num_params)
    return max(free // (BYTES_PER_NUMBER * int(example_size)), 0)


def paper_mbytes(num_bytes):
    """The paper's "MBytes" of model size: KiB / 1000."""
    return num_bytes / 1024.0 / 1000.0


def paper_training_mbytes(total_bytes):
    """The paper's "Training Memory" column: the sum of MO over epochs in KiB / 1e6."""
    return total_bytes / 1024.0 / 1e6


def kib(num_bytes):
    """Bytes to KiB."""
    return num_bytes / 1024.0


def parse_bytes(value):
    """Parses a memory size: an int/float of bytes or a string such as "1433KiB", "2.5MiB".

    Units: B, KB/MB/GB (powers of 1000) and KiB/MiB/GiB (powers of 1024), any case.

    Args:
        value: Number of bytes or a string with a unit.

    Returns:
        The size in bytes as an int (> 0).

    Raises:
        ValueError: If the value cannot be parsed or is not positive.
    """
    if isinstance(value, bool):
        raise ValueError(f"Cannot parse memory size {value!r}.")
    if isinstance(value, (int, float)):
        n = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(
                f"Cannot parse memory size {value!r}: use a number of bytes or a string "
                "such as '1433KiB', '2.5MiB', '3MB'."
            )
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise ValueError(f"Cannot parse memory size {value!r}: expected a number or a string.")
    if not math.isfinite(n):
        raise ValueError(f"Memory size must be finite; received {value!r}.")
    if not n > 0:
        raise ValueError(f"Memory size must be positive; received {value!r}.")
    return int(n)


def peak_rss_bytes():
    """Peak resident set size of this process so far (what it really used)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def release_free_memory():
    """Hands the C heap's free pages back to the system (glibc's `malloc_trim`); True if it ran.

    XLA compilation and Keras's per-epoch data adapters free much of what they
    allocate, but glibc keeps freed pages mapped: a JAX training process holds
    about 150 MiB of them after a few epochs (`benchmarks/bench_memory.py`).
    A no-op where glibc is not the C library.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True


# --------------------------------------------------------------------------
# Full accounting (Concepts, "Full accounting", eq. 14): what one training step holds
# --------------------------------------------------------------------------

ACCOUNTINGS = ("paper", "full")

#: Numbers one example keeps per gated layer for the backward pass (eq. 14): its input
#: a, the sampled gate z and the gated input a*z (n_in each), and the pre-activation h
#: (n_out). DynHP's variance measurement adds a*a and d*d (n_in + n_out).
ACTIVATIONS_PER_INPUT, ACTIVATIONS_PER_OUTPUT = 3, 1
VARIANCE_PER_INPUT, VARIANCE_PER_OUTPUT = 1, 1


def _numbers(variables):
    total = 0
    for v in variables:
        n = 1
        for dim in v.shape:
            n *= int(dim)
        total += n
    return total


def optimizer_slot_numbers(model):
    """Numbers the optimizer keeps besides the weights (Adam: two moments per trainable number).

    Read from the optimizer actually used: its variables, built on the model's
    trainable variables if training has not built them yet (as the first step
    would). Scalars (iterations, learning rate) are left out.

    Args:
        model: A compiled Keras model.

    Returns:
        The number of optimizer slot entries (int); 0 without an optimizer.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return 0
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    return _numbers(v for v in optimizer.variables if len(v.shape) > 0)


def connector_numbers(model):
    """Numbers one example keeps in the layers between gated layers (pooling outputs, gathers).

    A pooling layer keeps its output for the next layer (and the backends their
    own bookkeeping, not counted); Flatten is a reshape and keeps nothing.
    """
    import keras

    from keras_dynhp.layers.skip import SkipSave

    total = 0
    shape = (None,) + tuple(model.input_shape_per_example)
    shape = shape[:-1] + (model.feature_select.output_dim,)
    for i, layer in enumerate(model.gated_layers):
        shape = tuple(layer.compute_output_shape(shape))
        if i + 1 == len(model.gated_layers):
            break
        for connector in model.connectors[i]:
            shape = tuple(connector.compute_output_shape(shape))
            if not isinstance(connector, (keras.layers.Flatten, SkipSave)):  # reshapes, the kept tensor
                total += math.prod(int(d) for d in shape[1:])
        select = model.link_selects[i]
        if select is not None:
            shape = (None, select.output_dim)
            total += select.output_dim
    return total


def full_accounting(model, batch_size, measures_variance=False, held=0):
    """The full accounting of one training step of a DynHPModel, in bytes, term by term (eq. 14).

    Beside the paper's weights + input batch it counts what training holds:
    the gate parameters and counters, one gradient per trainable number, the
    optimizer's slots, and the activations one batch keeps for the backward
    pass (an estimate from the step's graph: each gated layer's
    `activation_numbers`, e.g. `ACTIVATIONS_PER_INPUT` for a dense layer, plus
    the pooling outputs and gathers between them, :func:`connector_numbers`).
    Framework and runtime overhead is not a tensor of the model and is not in it:
    :func:`peak_rss_bytes` shows the process.

    Args:
        model: A built :class:`~keras_dynhp.models.DynHPModel`.
        batch_size: The batch size of the step.
        measures_variance: DynHP's steps that measure the gradient variance.
        held: Bytes of copies the fit keeps besides the network (the best
            epoch's weights, network and optimizer state for
            `EarlyStopping(restore_best_weights=True)`).

    Returns:
        A dict of bytes: `weights` (stored weights and biases), `gates`
        (log_alpha and the gate counters), `gradients`, `optimizer`,
        `activations`, `input_batch`, `snapshot` (`held`, only when non-zero)
        and their sum `total`.
    """
    layers = model.gated_layers
    gate_numbers = _numbers(v for layer in layers for v in
                            (layer.log_alpha, layer.gate_active_count, layer.gate_observations))
    per_example = sum(layer.activation_numbers(measures_variance) for layer in layers)
    per_example += connector_numbers(model)
    terms = {
        "weights": network_bytes(model.count_params_stored()),
        "gates": BYTES_PER_NUMBER * gate_numbers,
        "gradients": BYTES_PER_NUMBER * _numbers(model.trainable_variables),
        "optimizer": BYTES_PER_NUMBER * optimizer_slot_numbers(model),
        "activations": BYTES_PER_NUMBER * int(batch_size) * per_example,
        "input_batch": batch_bytes(batch_size, model.example_size),
    }
    if held:
        terms["snapshot"] = int(held)
    terms["total"] = sum(terms.values())
    return terms


def footprint(model, accounting="paper", measures_variance=False):
    """Training memory as `fixed + batch_size * per_example` bytes in the chosen accounting.

    Both accountings are linear in the batch size, which is what DynHP's batch
    cap needs: the largest batch within a budget C is floor((C - fixed) / per_example).

    Args:
        model: A built DynHPModel.
        accounting: "paper" (weights + input batch) or "full" (:func:`full_accounting`).
        measures_variance: As in :func:`full_accounting`.

    Returns:
        `(fixed_bytes, per_example_bytes)`.
    """
    if accounting not in ACCOUNTINGS:
        raise ValueError(f"`accounting` must be one of {ACCOUNTINGS}; received {accounting!r}.")
    if accounting == "paper":
        return network_bytes(model.count_params_stored()), batch_bytes(1, model.example_size)
    zero, one = (full_accounting(model, b, measures_variance)["total"] for b in (0, 1))
    return zero, one - zero
