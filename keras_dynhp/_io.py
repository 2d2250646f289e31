"""Atomic file writers shared by export, callbacks, the CLI and the experiments."""

import csv
import io
import json
import math
import os

import numpy as np


def to_jsonable(value):
    """`value` with NumPy scalars/arrays as Python numbers/lists and NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_bytes(path, data):
    """Writes `data` to `path` atomically (a temporary file, then a rename), creating its folder."""
    path = os.fspath(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def write_json(path, obj):
    """Writes `obj` as indented JSON, atomically (see :func:`to_jsonable`)."""
    return write_bytes(path, (json.dumps(to_jsonable(obj), indent=1) + "\n").encode())


def write_csv(path, rows):
    """Writes a list of dicts as CSV (columns in order of first appearance), atomically."""
    fields = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(to_jsonable(list(rows)))
    return write_bytes(path, buffer.getvalue().encode())


#: Suffix of the temporary file :func:`save_keras` writes first (Keras wants names ending in ".keras").
PARTIAL_SUFFIX = ".partial.keras"


def save_keras(model, path):
    """Saves a Keras model as `path` (a `.keras` file) atomically.

    The model is saved to `path + ".partial.keras"` and then renamed over
    `path`, so an interruption (Ctrl-C, a kill, a full disk) during the write
    leaves the previous `path` intact; on an exception the partial file is
    removed. Returns `path`.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = path + PARTIAL_SUFFIX
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return path
