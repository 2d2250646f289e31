"""Hard-pruning surgery: physical removal of units, with the optimizer state carried.

The unit of surgery is a *group* (Torch-Pruning's lesson): the units shared by a
producer's outputs and a consumer's gated inputs. The consumer's gates decide
(:class:`~keras_dynhp.pruning.HardPruning`, eq. 6-7); the consumer loses those
inputs, the producer those outputs, and where the producer is the model input
the model's :class:`~keras_dynhp.layers.FeatureSelect` drops the features.
Pooling between two convolutions passes a channel through unchanged. Across a
`Flatten` a convolution's channel becomes H * W features of the dense layer
after it, each with its own gate: the dense layer loses the pruned features'
kernel rows, the gather after the Flatten (`DynHPModel.link_selects`) drops
them, and the convolution loses a channel (its filter and bias) once none of
its features is left.

Each gated layer owns its slicing (:meth:`~keras_dynhp.layers.GatedLayer.pruned`
builds a smaller copy; :meth:`~keras_dynhp.layers.GatedLayer.prunable_weights`
says which axes follow which units). The per-channel layers with weights
between a producer and its consumer (BatchNormalization, DepthwiseConv2D:
:mod:`keras_dynhp.layers.channels`) belong to the producer's group: they lose
the same channels, sliced by their own handlers. The optimizer's per-variable slots
(moments, momentum) are sliced the same way and the iteration count is carried
over: slots are matched to their variables through the optimizer's public
`add_variable_from_reference`, which every Keras optimizer uses to create them.
"""

import dataclasses
import time

import numpy as np
from keras import ops

from keras_dynhp.layers import channels as channel_layers
from keras_dynhp.layers.base import slice_array
from keras_dynhp.pruning import HardPruning


@dataclasses.dataclass
class Group:
    """Units shared by a producer's outputs and a consumer's gated inputs.

    Attributes:
        consumer: Index of the gated layer whose input gates decide.
        producer: Index of the gated layer whose outputs are those units, or
            None when they are the model's input features.
    """

    consumer: int
    producer: int = None


def chain_groups(n_layers):
    """Groups of a chain of gated layers: the input features, then each hidden layer.

    Example:
        >>> chain_groups(3)
        [Group(consumer=0, producer=None), Group(consumer=1, producer=0), Group(consumer=2, producer=1)]
    """
    return [Group(i, i - 1 if i else None) for i in range(n_layers)]


def _build_recording(template, variables):
    """A fresh optimizer like `template`, built on `variables`, and the variable behind each slot.

    Slots start as NumPy zeros (no per-shape compilation on JAX); they are
    overwritten with the carried state anyway.

    Returns:
        `(optimizer, owners)`: `owners[k]` is the model variable
        `optimizer.variables[k]` was created from (None for iterations,
        learning rate and other global state).
    """
    optimizer = template.__class__.from_config(template.get_config())
    created = {}
    make_slot = optimizer.add_variable_from_reference

    def recording(reference_variable, name=None, initializer="zeros"):
        if initializer == "zeros":
            initializer = lambda shape, dtype=None: np.zeros(shape, dtype=dtype)  # noqa: E731
        slot = make_slot(reference_variable, name=name, initializer=initializer)
        created[id(slot)] = reference_variable
        return slot

    object.__setattr__(optimizer, "add_variable_from_reference", recording)
    try:
        optimizer.build(variables)
    finally:
        object.__delattr__(optimizer, "add_variable_from_reference")
    return optimizer, [created.get(id(v)) for v in optimizer.variables]


def carry_optimizer_state(model, old_optimizer, replaced):
    """Gives `model` a fresh optimizer holding the old one's state, sliced where variables shrank.

    The fresh optimizer (same class and config) is built on the model's
    variables, which keep their order through surgery, so its variables line up
    one to one with the old optimizer's; the slot-to-variable map recorded during
    the build says which slots to slice and how.

    Args:
        model: The model after surgery.
        old_optimizer: Its built optimizer from before the surgery.
        replaced: `{id(old variable): (new variable, slicer or None)}`.

    Raises:
        RuntimeError: If the state does not line up (a bug, not a user error).
    """
    new_optimizer, new_owners = _build_recording(old_optimizer, model.trainable_variables)
    if len(new_optimizer.variables) != len(old_optimizer.variables):
        raise RuntimeError(
            f"Optimizer state mismatch after surgery: {len(old_optimizer.variables)} old variables, "
            f"{len(new_optimizer.variables)} new ones.")
    slicers = {id(new): slicer for new, slicer in replaced.values()}
    for old_slot, new_slot, owner in zip(old_optimizer.variables, new_optimizer.variables, new_owners):
        value = ops.convert_to_numpy(old_slot)
        slicer = slicers.get(id(owner)) if owner is not None else None
        if slicer is not None:
            value = slicer(value)
        if tuple(value.shape) != tuple(new_slot.shape):
            raise RuntimeError(
                f"Cannot carry optimizer variable {old_slot.path}: shape {value.shape} after slicing, "
                f"{tuple(new_slot.shape)} expected."
            )
        new_slot.assign(value)
    model.optimizer = new_optimizer


def prune_model(model, gamma=0.5, min_units=1, policy=None, limit=None):
    """Hard-prunes a :class:`~keras_dynhp.models.DynHPModel` in place from its gate statistics.

    Args:
        model: A built DynHPModel whose gated layers collected gate statistics
            during the epoch.
        gamma: Activation-rate threshold (eq. 7), when `policy` is None.
        min_units: No gated unit set drops below this size, when `policy` is None.
        policy: A :class:`~keras_dynhp.pruning.HardPruning` (overrides `gamma`
            and `min_units`).
        limit: Optional `limit(keep, rates) -> keep` applied to the masks
            before the surgery (the model budget's floor,
            :func:`keras_dynhp.budget.limit_pruning`).

    Returns:
        A dict report: `units_before`, `units_after` (gated input units per layer),
        `pruned` (per layer), `changed` (bool), `seconds` (surgery time).
    """
    policy = policy or HardPruning(gamma, min_units)
    rates = [layer.activation_rates() for layer in model.gated_layers]
    keep = [None if r is None else policy.keep(r) for r in rates]
    if limit is not None:
        keep = limit(keep, rates)
    return remove_units(model, keep)


def remove_units(model, keep):
    """Removes the gated units not in `keep` from a DynHPModel, in place.

    Each group's consumer decides (its gated inputs); the producer loses the
    same units as outputs, or the model's FeatureSelect the input features.

    Args:
        model: A built DynHPModel.
        keep: One boolean mask (or None: keep all) per gated layer, over its
            current gated input units.

    Returns:
        The report of :func:`prune_model`.

    The smaller layers are built before the model is touched, and an error or
    interrupt while they are swapped in puts the old ones back: the model is
    either pruned or as it was, never half-pruned.
    """
    start = time.perf_counter()
    layers = list(model.gated_layers)
    before = [layer.gated_units for layer in layers]
    links = model.links()
    keep_in, keep_out, keep_features, keep_links = {}, {}, None, {}
    for group in model.pruning_groups():
        mask = keep[group.consumer]
        if mask is None:
            continue
        mask = np.asarray(mask, bool)
        if mask.shape != (before[group.consumer],) or not mask.any():
            raise ValueError(
                f"The keep mask of gated layer {group.consumer} must be a non-empty selection of its "
                f"{before[group.consumer]} units; received shape {mask.shape}, {int(mask.sum())} kept.")
        if mask.all():
            continue
        kept = np.flatnonzero(mask)
        keep_in[group.consumer] = kept
        if group.producer is None:
            keep_features = kept
        elif links[group.consumer] is None:
            keep_out[group.producer] = kept
        else:  # after a Flatten: the producer keeps the channels some kept feature reads
            keep_links[group.producer] = kept
            channels = np.unique(links[group.consumer][kept])
            if len(channels) < layers[group.producer].output_units:
                keep_out[group.producer] = channels
    changed = bool(keep_in)
    if changed:
        old_optimizer = getattr(model, "optimizer", None)
        replaced, new_layers = {}, []
        for i, layer in enumerate(layers):
            if i not in keep_in and i not in keep_out:
                new_layers.append(layer)
                continue
            rows, cols = keep_in.get(i), keep_out.get(i)
            new = layer.pruned(keep_inputs=rows, keep_outputs=cols)
            for old_var, new_var, axes in zip(layer.variables, new.variables, layer.variable_axes()):
                slicer = None if axes == (None, None) else (
                    lambda value, axes=axes, rows=rows, cols=cols: slice_array(value, *axes, rows, cols))
                replaced[id(old_var)] = (new_var, slicer)
            new_layers.append(new)
        new_gaps = {}
        for gap, cols in keep_out.items():  # the producer's channel layers lose its pruned channels
            if gap + 1 < len(layers) and model.channel_layers(gap):
                new_gaps[gap] = [_sliced_connector(c, cols, replaced) for c in model.connectors[gap]]
        saved = _network_state(model)
        try:  # all or nothing: an error or Ctrl-C in here leaves the model as it was
            if keep_features is not None:
                model.select_features(keep_features)
            for gap, kept in keep_links.items():
                model.select_link_features(gap, kept)
            model.replace_gated_layers(new_layers)
            for gap, gap_layers in new_gaps.items():
                model.replace_connectors(gap, gap_layers)
            if old_optimizer is not None and getattr(old_optimizer, "built", False):
                carry_optimizer_state(model, old_optimizer, replaced)
        except BaseException:
            _put_back(model, saved)
            raise
        model.invalidate_functions()
    after = [layer.gated_units for layer in model.gated_layers]
    return {
        "units_before": before,
        "units_after": after,
        "pruned": [b - a for b, a in zip(before, after)],
        "changed": changed,
        "seconds": time.perf_counter() - start,
    }


def _sliced_connector(layer, keep, replaced):
    """`layer` itself (weight-free), or its copy with the `keep` channels; records its variables in `replaced`."""
    if channel_layers.channel_handler(layer) is None:
        return layer
    new = channel_layers.sliced_copy(layer, keep)
    for old_var, new_var, slicer in zip(layer.variables, new.variables, channel_layers.channel_slicers(layer, keep)):
        replaced[id(old_var)] = (new_var, slicer)
    return new


@dataclasses.dataclass
class ArchitectureSnapshot:
    """What it takes to put a DynHPModel's network back as it was: see :func:`snapshot_architecture`.

    Attributes:
        units: Gated input units per layer (the architecture's signature, with
            `features` and `links`).
        layers: Per gated layer `(class, config, build shape, scope, [(variable
            name, value)])`.
        features: The model's selected input features (None: all).
        links: Per gap, `(input_dim, indices)` of the gather after a Flatten, or None.
        optimizer: The optimizer's variables' values (None: not built yet).
        channels: Per gap, `{position in the gap: [values]}` of its per-channel
            layers with weights (BatchNormalization, DepthwiseConv2D).
    """

    units: list
    layers: list
    features: object
    links: list
    optimizer: object = None
    channels: list = None

    @property
    def nbytes(self):
        """Bytes of the copies the snapshot holds (memory the process keeps for it)."""
        arrays = [value for *_, values in self.layers for _, value in values] + list(self.optimizer or [])
        arrays += [value for gap in self.channels or [] for values in gap.values() for value in values]
        return int(sum(np.asarray(a).nbytes for a in arrays))

    def signature(self):
        """The network's shape: units, selected input features and gathers (equal: same shapes)."""
        return _signature(self.units, self.features, self.links)


def _signature(units, features, links):
    return (tuple(units), None if features is None else tuple(features),
            tuple(None if link is None else (link[0], None if link[1] is None else tuple(link[1]))
                  for link in links))


def _network_state(model):
    """What a surgery or a restore changes: `(gated layers, input features, gathers, optimizer, connectors)`."""
    return (list(model.gated_layers), model.feature_select.indices, _links_of(model),
            getattr(model, "optimizer", None), model.connectors)


def _put_back(model, state):
    """Undoes a half-done surgery or restore: the model as :func:`_network_state` saw it."""
    layers, features, links, optimizer, connectors = state
    model.feature_select.set_indices(features)
    for select, link in zip(model.link_selects, links):
        if select is not None:
            select.input_dim = link[0]
            select.set_indices(link[1])
    model.replace_gated_layers(layers)
    for gap, gap_layers in enumerate(connectors):
        if [id(c) for c in gap_layers] != [id(c) for c in model.connectors[gap]]:
            model.replace_connectors(gap, gap_layers)
    model.optimizer = optimizer
    model.invalidate_functions()


def _links_of(model):
    return [None if s is None else (int(s.input_dim), None if s.indices is None else list(s.indices))
            for s in model.link_selects]


def architecture_signature(model):
    """What a snapshot's `signature()` compares (:class:`ArchitectureSnapshot`): units, features, gathers."""
    features = model.feature_select.indices
    return _signature(model.units(), None if features is None else list(features), _links_of(model))


def snapshot_architecture(model, values=None):
    """Copies of a DynHPModel's network (layers, input features, gathers) and optimizer state.

    Unlike `get_weights()` alone, a snapshot can be put back after hard pruning
    has removed units (:func:`restore_architecture`): `EarlyStopping(
    restore_best_weights=True)` restores the best epoch's network through it.

    Args:
        model: A built DynHPModel.
        values: Optional `{id(variable): array}` copies already made (shared, not copied again).

    Returns:
        An :class:`ArchitectureSnapshot`.
    """
    values = values or {}

    def copy(v):
        return values[id(v)] if id(v) in values else ops.convert_to_numpy(v)

    layers = [(type(layer), layer.copy_config(), layer.build_shape(layer.gated_units), layer.scope(),
               [(v.name, copy(v)) for v in layer.variables]) for layer in model.gated_layers]
    features = model.feature_select.indices
    optimizer = getattr(model, "optimizer", None)
    slots = ([ops.convert_to_numpy(v) for v in optimizer.variables]
             if optimizer is not None and getattr(optimizer, "built", False) else None)
    channels = [{k: [copy(v) for v in c.variables] for k, c in enumerate(gap)
                 if channel_layers.channel_handler(c) is not None} for gap in model.connectors]
    return ArchitectureSnapshot(model.units(), layers, None if features is None else list(features),
                                _links_of(model), slots, channels)


def restore_architecture(model, snapshot):
    """Puts back the network of an :class:`ArchitectureSnapshot`, in place, all or nothing.

    The gated layers are rebuilt at the snapshot's sizes with its values, the
    input features and gathers reset, and the optimizer rebuilt on the restored
    variables with the snapshot's state (its slots have the restored shapes).
    The model-level variables (the model budget's multiplier) are left as
    they are.
    """
    new_layers = [cls.from_values(config, shape, values, scope)
                  for cls, config, shape, scope, values in snapshot.layers]
    new_gaps = {}
    for gap, stored in enumerate(snapshot.channels or []):
        if stored:
            new_gaps[gap] = [_restored_connector(c, stored.get(k)) for k, c in enumerate(model.connectors[gap])]
    saved = _network_state(model)
    old_optimizer = saved[3]
    try:
        model.feature_select.set_indices(None if snapshot.features is None else list(snapshot.features))
        for select, link in zip(model.link_selects, snapshot.links):
            if select is not None and link is not None:
                select.input_dim = link[0]
                select.set_indices(link[1])
        model.replace_gated_layers(new_layers)
        for gap, gap_layers in new_gaps.items():
            model.replace_connectors(gap, gap_layers)
        if old_optimizer is not None and snapshot.optimizer is not None:
            optimizer, _ = _build_recording(old_optimizer, model.trainable_variables)
            if len(optimizer.variables) != len(snapshot.optimizer):
                raise RuntimeError(
                    "The snapshot's optimizer state does not line up with the restored network.")
            for variable, value in zip(optimizer.variables, snapshot.optimizer):
                variable.assign(value)
            model.optimizer = optimizer
    except BaseException:
        _put_back(model, saved)
        raise
    model.invalidate_functions()


def _restored_connector(layer, values):
    """`layer` itself (weight-free), or a copy of channel layer `layer` holding a snapshot's `values`."""
    if values is None:
        return layer
    axes = channel_layers.channel_handler(layer).channel_axes(layer)
    channels = next(np.shape(v)[axis] for v, axis in zip(values, axes) if axis is not None)
    return channel_layers.copy_with_values(layer, channels, values)
