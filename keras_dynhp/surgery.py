"""Hard pruning: physical removal of rarely active units (paper section 4.1, eq. 6-7).

At the end of an epoch, for every gate j of every gated layer::

    a_j = active observations / all observations            # eq. 6
    keep_j = a_j >= gamma                                    # eq. 7, g(a, gamma)
    Z = Z * keep                                             # the kept set only shrinks

A pruned input unit j of layer l removes row j of W_l and log_alpha_l[j]; for a
hidden unit also column j of W_{l-1} and b_{l-1}[j]; for an input pixel the
model's :class:`~keras_dynhp.layers.FeatureSelect` drops the pixel. Layers are
rebuilt with smaller variables, and the optimizer's slot variables (moments,
momentum) are sliced the same way; the iteration count is carried over.
"""

import time

import numpy as np
from keras import ops


def keep_mask(rates, gamma, min_units=1):
    """Eq. 7 with a floor: units with a_j >= gamma, at least `min_units` of them.

    When fewer than `min_units` pass the threshold, the most active ones are kept.

    Args:
        rates: Activation rates a_j (eq. 6), or None to keep everything.
        gamma: Threshold in [0, 1].
        min_units: Minimum number of units kept (>= 1).

    Returns:
        Boolean NumPy mask.
    """
    rates = np.asarray(rates, dtype="float64")
    mask = rates >= gamma
    need = min(int(min_units), rates.size)
    if mask.sum() < need:
        top = np.argsort(-rates, kind="stable")[:need]
        mask[top] = True
    return mask


def prefix(variable):
    """Start of the names of the optimizer slots created for `variable`."""
    return variable.path.replace("/", "_") + "_"


def _optimizer_state(optimizer):
    if optimizer is None or not getattr(optimizer, "built", False):
        return None
    return [(v.path, ops.convert_to_numpy(v)) for v in optimizer.variables]


def _rebuild_optimizer(model, old_optimizer, old_state, slicers):
    """Builds a fresh optimizer of the same config and carries the sliced state over."""
    new = old_optimizer.__class__.from_config(old_optimizer.get_config())
    new.build(model.trainable_variables)
    prefixes = sorted(slicers.items(), key=lambda kv: -len(kv[0]))
    if len(old_state) != len(new.variables):
        raise RuntimeError(
            f"Optimizer state mismatch after surgery: {len(old_state)} old variables, "
            f"{len(new.variables)} new ones."
        )
    # Same class, same config, same variable order: the slots line up one to one.
    for (old_path, value), var in zip(old_state, new.variables):
        if old_path != var.path:
            raise RuntimeError(f"Optimizer variable {old_path} does not line up with {var.path}.")
        if tuple(value.shape) != tuple(var.shape):
            for prefix, slicer in prefixes:
                if var.name.startswith(prefix):
                    value = slicer(value)
                    break
        if tuple(value.shape) != tuple(var.shape):
            raise RuntimeError(
                f"Cannot carry optimizer variable {var.path}: old shape {value.shape}, "
                f"new shape {tuple(var.shape)}."
            )
        var.assign(value)
    model.optimizer = new


def prune_model(model, gamma=0.5, min_units=1):
    """Hard-prunes a :class:`~keras_dynhp.models.DynHPModel` in place from its gate statistics.

    Args:
        model: A built DynHPModel whose gated layers collected gate statistics
            during the epoch.
        gamma: Activation-rate threshold (eq. 7).
        min_units: No gated unit set drops below this size.

    Returns:
        A dict report: `units_before`, `units_after` (gated input units per layer),
        `pruned` (per layer), `changed` (bool), `seconds` (surgery time).
    """
    start = time.perf_counter()
    layers = model.gated_layers
    masks = []
    for layer in layers:
        rates = layer.activation_rates()
        masks.append(np.ones(layer.input_dim, bool) if rates is None else keep_mask(rates, gamma, min_units))
    before = [layer.input_dim for layer in layers]
    changed = any(not m.all() for m in masks)
    if changed:
        old_optimizer = getattr(model, "optimizer", None)
        old_state = _optimizer_state(old_optimizer)
        slicers = {}
        for i, layer in enumerate(layers):
            rows = np.flatnonzero(masks[i])
            cols = np.flatnonzero(masks[i + 1]) if i + 1 < len(layers) else None
            row_sel = None if masks[i].all() else rows
            col_sel = None if cols is None or masks[i + 1].all() else cols
            if row_sel is None and col_sel is None:
                continue
            slicers[prefix(layer.kernel)] = _kernel_slicer(row_sel, col_sel)
            if layer.use_bias:
                slicers[prefix(layer.bias)] = _vector_slicer(col_sel)
            slicers[prefix(layer.log_alpha)] = _vector_slicer(row_sel)
            if i == 0 and row_sel is not None:
                old = model.feature_select.indices
                old = np.arange(model.input_dim) if old is None else np.asarray(old)
                model.feature_select.set_indices(old[row_sel].tolist())
            layer.resize(keep_inputs=row_sel, keep_units=col_sel)
        if old_state is not None:
            _rebuild_optimizer(model, old_optimizer, old_state, slicers)
        model.invalidate_functions()
    after = [layer.input_dim for layer in layers]
    return {
        "units_before": before,
        "units_after": after,
        "pruned": [b - a for b, a in zip(before, after)],
        "changed": changed,
        "seconds": time.perf_counter() - start,
    }


def _kernel_slicer(rows, cols):
    def slicer(value):
        if rows is not None:
            value = value[rows]
        if cols is not None:
            value = value[:, cols]
        return value

    return slicer


def _vector_slicer(index):
    return (lambda value: value) if index is None else (lambda value: value[index])
