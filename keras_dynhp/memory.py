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
honest labels.

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
