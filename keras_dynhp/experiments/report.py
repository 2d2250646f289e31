"""Plots and tables of training runs (the paper's figures and table format).

Histories are dicts of per-epoch lists, as in `keras.callbacks.History.history`
returned by :meth:`keras_dynhp.DynHPModel.fit` (a `History` object or a list of
per-epoch row dicts, as written by :class:`~keras_dynhp.callbacks.PruningLogger`,
are accepted too). Keys ending in ``error`` that are not logged are derived from
the matching ``accuracy`` key (``val_error`` = 1 - ``val_accuracy``).

Plots need matplotlib (``pip install keras_dynhp[plots]``); they are drawn with
the Agg backend on a figure of their own, without touching pyplot's global state.
Tables are GitHub Markdown strings and need nothing.

Example:
    >>> print(markdown_table([{"run": "SP", "error": 12.345}], ["run", "error"]))
    | run | error |
    |---|---|
    | SP | 12.35 |
    >>> summary_row("DynHP", 13.0, 100_000, 2_000_000,
    ...             reference={"error_pct": 12.0, "params": 266_610,
    ...                        "training_bytes": 4_000_000}, units="KiB")["test error (%)"]
    '13.00 (+8.3%)'
"""

import math
import numbers

from keras_dynhp import memory

__all__ = [
    "PAPER_UNITS",
    "format_change",
    "history_dict",
    "markdown_table",
    "paper_table",
    "plot_runs",
    "plot_units",
    "series",
    "summary_row",
]

#: Units accepted by :func:`summary_row` and :func:`paper_table`.
PAPER_UNITS = ("paper", "KiB")

_INSTALL_HINT = "plotting needs matplotlib: pip install keras_dynhp[plots]"


# --------------------------------------------------------------------------
# Histories
# --------------------------------------------------------------------------


def history_dict(history):
    """Returns `history` as a dict of per-epoch lists.

    Args:
        history: A dict of lists, a `keras.callbacks.History` or a list of
            per-epoch dicts (rows; missing values become None).

    Returns:
        A dict key -> list.
    """
    history = getattr(history, "history", history)
    if isinstance(history, dict):
        return history
    if isinstance(history, (list, tuple)):
        keys = []
        for row in history:
            keys += [k for k in row if k not in keys]
        return {k: [row.get(k) for row in history] for k in keys}
    raise TypeError(
        f"Expected a history dict, a keras History or a list of rows; received {type(history).__name__}."
    )


def series(history, key):
    """The per-epoch values of `key`, or None when the history lacks it.

    ``<prefix>error`` is derived as 1 - ``<prefix>accuracy`` when not logged.
    """
    history = history_dict(history)
    if key in history:
        return list(history[key])
    if key.endswith("error"):
        acc = key[: -len("error")] + "accuracy"
        if acc in history:
            return [None if a is None else 1.0 - float(a) for a in history[acc]]
    return None


def _unit_keys(history):
    keys = []
    i = 0
    while f"units_{i}" in history:
        keys.append(f"units_{i}")
        i += 1
    return keys


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------


def _figure(figsize=(6.4, 4.2)):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(_INSTALL_HINT) from e
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    import os

    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _plot_xy(ax, values, scale=None, start=1, **kwargs):
    xs, ys = [], []
    for epoch, v in enumerate(values, start=start):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        xs.append(epoch)
        ys.append(float(v) * (scale if scale is not None else 1.0))
    ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, **kwargs)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs


def _layer_label(i, n_layers):
    if i == 0:
        return "input features"
    return f"hidden layer {i}" if n_layers > 1 else f"layer {i}"


def plot_units(history, path, title=None):
    """Active units per gated layer over epochs (paper Fig. 1), written as a PNG.

    Layer l's units are the gated *input* units of L0Dense layer l (`units_<l>`
    in the history): the input features, then each hidden layer.

    Args:
        history: History of :meth:`DynHPModel.fit` (needs `units_0`, ...).
        path: Output `.png` path.
        title: Figure title.

    Returns:
        The path written.

    Raises:
        ValueError: If the history has no `units_<l>` keys.
        ImportError: If matplotlib is not installed.
    """
    history = history_dict(history)
    keys = _unit_keys(history)
    if not keys:
        raise ValueError("The history has no `units_0`, `units_1`, ... keys (DynHPModel.fit logs them).")
    fig = _figure()
    ax = fig.add_subplot()
    # Epoch 0 is the initial width (units + pruned at the first epoch end) when it is known.
    initial = all(history.get(f"pruned_{i}") for i in range(len(keys)))
    for i, key in enumerate(keys):
        values = list(history[key])
        if initial and values and values[0] is not None:
            values = [values[0] + history[f"pruned_{i}"][0]] + values
        start = values[0] if values else None
        end = values[-1] if values else None
        label = f"{_layer_label(i, len(keys))} ({start:g} -> {end:g})" if values else key
        _plot_xy(ax, values, start=0 if initial else 1, label=label)
    ax.set_xlabel("epoch (0: before training)" if initial else "epoch")
    ax.set_ylabel("active units (after the epoch's pruning)")
    ax.set_yscale("log")
    from matplotlib.ticker import ScalarFormatter

    for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_formatter(ScalarFormatter())
    ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(len(keys), 3), fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_runs(runs, key, path, ylabel=None, title=None, scale=None, logy=False, lines=None):
    """One line per run of `history[key]` over epochs, written as a PNG.

    E.g. `key="memory_total_bytes"` (paper Fig. 2/7, `scale=1/1024` for KiB),
    `"val_error"` (Fig. 3-5, `scale=100` for %) or `"batch_size"` (Fig. 6).

    Args:
        runs: Dict label -> history (runs without `key` are left out).
        key: The history key to plot (``*error`` is derived from ``*accuracy``).
        path: Output `.png` path.
        ylabel: Y-axis label (default: `key`).
        title: Figure title.
        scale: Factor applied to the values.
        logy: Logarithmic y axis.
        lines: Dict label -> y value of horizontal dashed lines (e.g. a
            budget), in the units of `history[key]` (`scale` is applied).

    Returns:
        The path written.

    Raises:
        ValueError: If no run has `key`.
        ImportError: If matplotlib is not installed.
    """
    selected = {label: series(h, key) for label, h in runs.items()}
    selected = {label: v for label, v in selected.items() if v}
    if not selected:
        raise ValueError(f"No run has the key {key!r}.")
    fig = _figure()
    ax = fig.add_subplot()
    for label, values in selected.items():
        _plot_xy(ax, values, scale=scale, label=str(label))
    for label, y in (lines or {}).items():
        ax.axhline(y * (scale or 1.0), linestyle="--", color="black", linewidth=1, label=str(label))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or key)
    if logy:  # with plain tick labels (1, 2, 5, 10), not 2x10^0
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    # Below the axes, as in plot_units: a legend inside covered lines (budget lines, SP at the top).
    fig.legend(loc="outside lower center", ncols=min(len(selected) + len(lines or {}), 3),
               fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def _cell(value, floatfmt, intfmt, missing):
    if value is None:
        return missing
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return format(int(value), intfmt)
    if isinstance(value, numbers.Real):
        value = float(value)
        return missing if math.isnan(value) else format(value, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows, columns, headers=None, floatfmt=".2f", intfmt="", missing="-"):
    """A GitHub Markdown table of `rows`.

    Args:
        rows: List of dicts.
        columns: Keys to show, in order.
        headers: Column titles (default: the keys).
        floatfmt: `format` spec of floats (NumPy floats included).
        intfmt: `format` spec of integers ("," for thousands separators).
        missing: Text of missing and None values.

    Returns:
        The table, one line per row, without a trailing newline.
    """
    columns = list(columns)
    headers = columns if headers is None else list(headers)
    if len(headers) != len(columns):
        raise ValueError(f"{len(headers)} headers for {len(columns)} columns.")
    lines = [
        "| " + " | ".join(_cell(h, floatfmt, intfmt, missing) for h in headers) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [_cell(row.get(c), floatfmt, intfmt, missing) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_change(value, reference, decimals=1):
    """Relative change in %, e.g. "+4.1%" (None when it cannot be computed)."""
    if value is None or reference is None or reference == 0:
        return None
    return f"{100.0 * (value / reference - 1.0):+.{decimals}f}%"


def _with_change(text, value, reference, show):
    change = format_change(value, reference) if show else None
    return f"{text} ({change})" if change else text


def _sizes(units):
    if units == "paper":
        return memory.paper_mbytes, memory.paper_training_mbytes, "MBytes", ".3f"
    if units == "KiB":
        return memory.kib, memory.kib, "KiB", ".1f"
    raise ValueError(f"`units` must be one of {PAPER_UNITS}; received {units!r}.")


def _headers(units):
    unit = _sizes(units)[2]
    return {
        "run": "run",
        "error": "test error (%)",
        "params": "parameters",
        "size": f"model size ({unit})",
        "memory": f"training memory ({unit})",
    }


def summary_row(label, error_pct, params, training_bytes, reference=None, units="paper",
                model_bytes=None):
    """One row of the paper's table: values with their change against a reference.

    Model size is `memory.network_bytes(params)` (4 bytes per stored weight and
    bias) unless `model_bytes` is given; training memory is the sum over epochs
    of network + batch bytes (`memory_total_bytes` of the history). In "paper"
    units they are the paper's MBytes columns (:func:`memory.paper_mbytes`,
    :func:`memory.paper_training_mbytes`, which differ by a factor 1000).

    Args:
        label: Name of the run.
        error_pct: Test error in percent (None: unknown).
        params: Stored weights and biases.
        training_bytes: Training memory in bytes, paper accounting (None: unknown).
        reference: The reference run (SP or dense) as a dict with `error_pct`,
            `params`, `training_bytes` (and optionally `model_bytes`), or None.
            Changes are shown as "12.30 (+4.1%)": relative, negative = saving.
        units: "paper" (the paper's MBytes) or "KiB".
        model_bytes: Model size in bytes (default from `params`).

    Returns:
        A dict with the keys of :func:`paper_table`'s headers, formatted strings.
    """
    size_fn, train_fn, _, fmt = _sizes(units)
    headers = _headers(units)
    ref = reference or {}
    size = model_bytes if model_bytes is not None else (
        None if params is None else memory.network_bytes(params))
    ref_size = ref.get("model_bytes")
    if ref_size is None and ref.get("params") is not None:
        ref_size = memory.network_bytes(ref["params"])
    show = reference is not None
    row = {headers["run"]: str(label)}
    row[headers["error"]] = (
        None if error_pct is None
        else _with_change(f"{error_pct:.2f}", error_pct, ref.get("error_pct"), show)
    )
    row[headers["params"]] = None if params is None else f"{int(params):,}"
    row[headers["size"]] = (
        None if size is None else _with_change(format(size_fn(size), fmt), size, ref_size, show)
    )
    row[headers["memory"]] = (
        None if training_bytes is None
        else _with_change(format(train_fn(training_bytes), fmt), training_bytes,
                          ref.get("training_bytes"), show)
    )
    return row


def paper_table(runs, reference=0, units="paper"):
    """The paper's table as Markdown: error, model size and training memory per run.

    Args:
        runs: List of dicts with `label`, `error_pct`, `params`, `training_bytes`
            (and optionally `model_bytes`); None values print as "-".
        reference: Index or label of the reference run (SP or dense), shown
            without changes; None: no changes at all.
        units: "paper" (the paper's MBytes columns) or "KiB".

    Returns:
        The Markdown table string.

    Example:
        >>> print(paper_table([
        ...     {"label": "SP", "error_pct": 10.0, "params": 1000, "training_bytes": 8000},
        ...     {"label": "DynHP", "error_pct": 11.0, "params": 250, "training_bytes": 4000},
        ... ], units="KiB"))
        | run | test error (%) | parameters | model size (KiB) | training memory (KiB) |
        |---|---|---|---|---|
        | SP | 10.00 | 1,000 | 3.9 | 7.8 |
        | DynHP | 11.00 (+10.0%) | 250 | 1.0 (-75.0%) | 3.9 (-50.0%) |
    """
    runs = list(runs)
    ref_index = None
    if reference is not None:
        if isinstance(reference, int) and not isinstance(reference, bool):
            if not -len(runs) <= reference < len(runs):
                raise ValueError(f"`reference`={reference} is out of range for {len(runs)} runs.")
            ref_index = reference % len(runs)
        else:
            labels = [r.get("label") for r in runs]
            if reference not in labels:
                raise ValueError(f"No run labelled {reference!r}; labels are {labels}.")
            ref_index = labels.index(reference)
    ref = runs[ref_index] if ref_index is not None else None
    rows = []
    for i, run in enumerate(runs):
        rows.append(
            summary_row(
                run.get("label", f"run {i}"),
                run.get("error_pct"),
                run.get("params"),
                run.get("training_bytes"),
                reference=ref if (ref is not None and i != ref_index) else None,
                units=units,
                model_bytes=run.get("model_bytes"),
            )
        )
    headers = list(_headers(units).values())
    return markdown_table(rows, headers)
