"""`DynHPModel`: a chain of gated layers trained with SP, HP or DynHP; `build_mlp`, `build_lenet5`.

The model knows its structure (gated layers, pruning groups, stored
parameters) and its train step (which measures the gradient variance for
DynHP); the epoch loop is in :mod:`keras_dynhp.training`, the policies in
:mod:`keras_dynhp.pruning` and :mod:`keras_dynhp.batch_size`, the surgery in
:mod:`keras_dynhp.surgery`.
"""

import keras
import numpy as np
from keras import ops

from keras_dynhp import _keras_internals, backend, memory, surgery, training
from keras_dynhp import callbacks as dynhp_callbacks
from keras_dynhp import penalty as penalties
from keras_dynhp.batch_size import DEFAULT_ALPHA_BS, FixedBatchSize
from keras_dynhp.budget import ModelBudget
from keras_dynhp.data import (
    EpochPipeline,
    ScaledArray,
    check_sample_weight,
    class_weight_to_sample_weight,
    is_dataset,
    take_rows,
    validation_inputs,
)
from keras_dynhp.layers import FeatureSelect, GatedLayer, L0Conv2D, L0Dense
from keras_dynhp.layers import channels as channel_layers
from keras_dynhp.layers.select import narrower_flat_map
from keras_dynhp.layers.skip import SkipAdd, SkipSave

MODES = training.MODES

#: Weight-free layers that may sit between two gated layers (`connectors`): they act on
#: every channel alone, so removing a channel passes through them. Besides them, the
#: per-channel layers with weights of :mod:`keras_dynhp.layers.channels`
#: (BatchNormalization, DepthwiseConv2D) lose the removed channels with their producer.
CONNECTOR_LAYERS = (
    keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D, keras.layers.Flatten, keras.layers.Dropout, keras.layers.Activation,
    keras.layers.ReLU, keras.layers.ZeroPadding2D,
)


def is_connector(layer):
    """Whether `layer` may sit between two gated layers (weight-free, a registered channel layer, a skip)."""
    return (isinstance(layer, CONNECTOR_LAYERS + (SkipSave, SkipAdd))
            or channel_layers.channel_handler(layer) is not None)


def connector_names():
    """The layer types `is_connector` accepts, for error messages."""
    classes = list(CONNECTOR_LAYERS) + list(channel_layers.registered_channel_layers()) + [SkipSave, SkipAdd]
    return ", ".join(cls.__name__ for cls in classes)


def tied_gap(gap_layers):
    """Whether a gap's channels are tied by a skip connection (it holds a `SkipSave` or a `SkipAdd`)."""
    return any(isinstance(c, (SkipSave, SkipAdd)) for c in gap_layers)


def _example_shape(input_dim, input_shape):
    """The per-example input shape from `input_dim` (flat inputs) or `input_shape`."""
    if input_shape is None:
        if input_dim is None:
            raise ValueError("DynHPModel needs `input_dim` (flat inputs) or `input_shape` (e.g. (28, 28, 1)).")
        return (int(input_dim),)
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0 for d in shape):
        raise ValueError(f"`input_shape` must be a tuple of positive integers; received {input_shape!r}.")
    shape = tuple(int(d) for d in shape)
    if input_dim is not None and int(input_dim) != shape[-1]:
        raise ValueError(f"`input_dim` ({input_dim}) must be the last axis of `input_shape` {shape}.")
    return shape

class ModelWeights(list):
    """`DynHPModel.get_weights()`: Keras's list of arrays, plus the network they belong to.

    A plain list to every reader; `DynHPModel.set_weights` also reads its
    `architecture` (an :class:`~keras_dynhp.surgery.ArchitectureSnapshot`) to
    put back units that hard pruning removed since, so that Keras's
    `EarlyStopping(restore_best_weights=True)` restores the best epoch's whole
    network.
    """

    def __init__(self, arrays, architecture):
        super().__init__(arrays)
        self.architecture = architecture

    @property
    def nbytes(self):
        """Bytes held: the arrays and the snapshot's optimizer state (the layers share the arrays)."""
        return int(sum(np.asarray(a).nbytes for a in self)) + int(
            sum(np.asarray(a).nbytes for a in self.architecture.optimizer or []))


@keras.saving.register_keras_serializable(package="keras_dynhp")
class DynHPModel(backend.trainer(), keras.Model):
    """A chain of gated layers (e.g. :class:`L0Dense`) that can hard-prune itself while training.

    The first layer's gates sit on the input features (the last axis of the
    inputs: pixels of flat images, channels of images); pruned features are
    dropped by a fixed :class:`FeatureSelect` in front, so the model always
    accepts inputs of its full shape. Its pruning groups
    (:meth:`pruning_groups`) are the input features and each hidden layer's
    units. Convolutional networks (:class:`~keras_dynhp.layers.L0Conv2D`) take
    images and have pass-through `connectors` (pooling, Flatten) between gated
    layers; after a Flatten the next layer's gates sit on single features
    (:meth:`links`).

    Train-step state: `_variance_every` is None for Keras's own train step, or
    k when the DynHP step measures ||S||_1 and F every k steps (decided when the
    step is traced); `_report_variance` shows their trackers in `metrics`
    during a DynHP fit only.

    Args:
        gated_layers: List of gated layers (:class:`~keras_dynhp.layers.GatedLayer`,
            or their serialised configs); layer l + 1's input units are layer
            l's output units.
        input_dim: Width of flat inputs (or the last axis of `input_shape`).
        input_indices: Surviving input features (None: all).
        training_state: Where training stands (`epoch`, `memory_total_bytes`,
            `batch_size`), kept up to date by `fit` and saved with the model.
        penalty: Weighting of the L0 penalty, "louizos" (eq. 5, the paper's)
            or "size" (eq. 11: the expected model size, which counts
            everything pruning a unit frees); see :mod:`keras_dynhp.penalty`.
            Set on every gated layer; None takes the layers' own setting.
        input_shape: Shape of one input example, e.g. `(28, 28, 1)` (default
            `(input_dim,)`).
        connectors: One list per gap between gated layers of layers acting on
            each channel alone: weight-free ones (:data:`CONNECTOR_LAYERS`) and
            per-channel layers with weights (BatchNormalization,
            DepthwiseConv2D: :mod:`keras_dynhp.layers.channels`; before any
            Flatten of their gap), or their configs; None: none.
        link_indices: Per gap, the features still read after a Flatten (saved
            with the model; None: all).
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Example:
        >>> model = DynHPModel([L0Dense(8, "relu"), L0Dense(3)], input_dim=5)
        >>> model.count_params_stored()
        75
    """

    def __init__(self, gated_layers, input_dim=None, input_indices=None, training_state=None, penalty=None,
                 input_shape=None, connectors=None, link_indices=None, **kwargs):
        super().__init__(**kwargs)
        if not gated_layers:
            raise ValueError("`gated_layers` must contain at least one L0Dense layer.")
        layers = [
            keras.saving.deserialize_keras_object(layer) if isinstance(layer, dict) else layer
            for layer in gated_layers
        ]
        for layer in layers:
            if not isinstance(layer, GatedLayer):
                raise ValueError(
                    f"DynHPModel takes gated layers (such as L0Dense) only; received "
                    f"{type(layer).__name__}."
                )
        if penalty is None:
            kinds = sorted({layer.penalty for layer in layers})
            if len(kinds) > 1:
                raise ValueError(
                    f"The gated layers mix L0 penalty weightings {kinds}: pass `penalty=` to use one.")
            penalty = kinds[0]
        self.penalty = penalties.check_penalty(penalty)
        for layer in layers:
            layer.penalty = self.penalty
        self.input_shape_ = _example_shape(input_dim, input_shape)
        self.input_dim = self.input_shape_[-1]
        self.feature_select = FeatureSelect(self.input_dim, input_indices, name="feature_select")
        self.gated_layers = layers
        self._connectors = self._check_connectors(connectors, len(layers))
        self._check_skips()
        # After a Flatten, the next gated layer reads single features: a fixed gather keeps those
        # still present (created in `build`, where the flattened width is known).
        self._link_indices = list(link_indices) if link_indices is not None else [None] * (len(layers) - 1)
        if len(self._link_indices) != len(layers) - 1:
            raise ValueError(f"`link_indices` needs one entry per gap between gated layers ({len(layers) - 1}).")
        self.link_selects = [None] * (len(layers) - 1)
        self._variance_every = None
        self._report_variance = False
        # Where training stands (saved with the model, so `fit(initial_epoch=...)` resumes it):
        # epochs finished, running sum of the paper's MO, and the next epoch's batch size.
        self.training_state = dict(training_state or {})
        self.variance_tracker = keras.metrics.Mean(name="grad_var_l1")
        self.data_loss_tracker = keras.metrics.Mean(name="data_loss")
        # The model-size budget's state (keras_dynhp.budget): the multiplier mu of eq. 13
        # and the epoch's target T_e (eq. 12). `_budget` is M during a budgeted fit.
        self.budget_multiplier = self.add_weight(
            name="budget_multiplier", shape=(), initializer="zeros", trainable=False)
        self.budget_target_bytes = self.add_weight(
            name="budget_target_bytes", shape=(), initializer="ones", trainable=False)
        self.budget_step = self.add_weight(  # eta / K: the multiplier's step per training step
            name="budget_step", shape=(), initializer="zeros", trainable=False)
        self._budget = None
        self.build((None,) + self.input_shape_)

    @property
    def metrics(self):
        # ||S||_1 and F are DynHP training figures: hidden outside a DynHP fit,
        # so `evaluate` returns only the loss and the compiled metrics.
        metrics = super().metrics
        if not self._report_variance:
            metrics = [m for m in metrics if m is not self.variance_tracker and m is not self.data_loss_tracker]
        return metrics

    # ------------------------------------------------------------ structure
    @staticmethod
    def _check_connectors(connectors, n_layers):
        """One list of pass-through layers per gap between gated layers (deserialised, checked)."""
        if connectors is None:
            return [[] for _ in range(n_layers - 1)]
        connectors = [list(c or []) for c in connectors]
        if len(connectors) != n_layers - 1:
            raise ValueError(
                f"`connectors` needs one list per gap between the {n_layers} gated layers "
                f"({n_layers - 1}); received {len(connectors)}.")
        checked = []
        for gap in connectors:
            layers = [keras.saving.deserialize_keras_object(c) if isinstance(c, dict) else c for c in gap]
            flattened = False
            for layer in layers:
                if not is_connector(layer):
                    raise ValueError(
                        f"Layer '{getattr(layer, 'name', layer)}' ({type(layer).__name__}) cannot sit between "
                        f"gated layers: only layers that act on each channel alone can ({connector_names()}).")
                if channel_layers.channel_handler(layer) is not None:
                    if flattened:
                        raise ValueError(
                            f"Layer '{layer.name}' ({type(layer).__name__}) comes after a Flatten: per-channel "
                            "layers with weights must act on the channels of the layer before it.")
                    channel_layers.check_channel_layer(layer)
                flattened = flattened or isinstance(layer, keras.layers.Flatten)
            checked.append(layers)
        return checked

    def _check_skips(self):
        """Each SkipAdd has an earlier SkipSave; the gated layer after a tied gap has no input gates."""
        saved = set()
        for i, gap in enumerate(self._connectors):
            for layer in gap:
                if isinstance(layer, SkipSave):
                    saved.add(layer.key)
                elif isinstance(layer, SkipAdd) and layer.key not in saved:
                    raise ValueError(
                        f"SkipAdd '{layer.name}' adds '{layer.key}', which no earlier SkipSave keeps.")
            if tied_gap(gap) and self.gated_layers[i + 1].gate_inputs:
                raise ValueError(
                    f"The channels between gated layers {i} and {i + 1} are tied by a skip connection: give "
                    f"'{self.gated_layers[i + 1].name}' gate_inputs=False (tied channels are kept whole).")

    @property
    def connectors(self):
        """Per gap between gated layers, the layers in it (pooling, Flatten, BatchNormalization, ...)."""
        return [list(gap) for gap in self._connectors]

    def channel_layers(self, gap):
        """The per-channel layers with weights of gap `gap` (they follow gated layer `gap`'s outputs)."""
        return [c for c in self._connectors[gap] if channel_layers.channel_handler(c) is not None]

    def _annotate_channel_params(self):
        """Tells each gated layer what its gap's channel layers store per output channel.

        `GatedLayer.output_channel_params` (derived, not saved) is added per
        output unit to the layer's size wherever the size is computed
        (:func:`keras_dynhp.penalty.network_params`: the penalty of eq. 11, the
        model budget, the delivered size).
        """
        for i, layer in enumerate(self.gated_layers):
            gap = [] if i + 1 == len(self.gated_layers) else self._connectors[i]
            layer.output_channel_params = int(sum(channel_layers.channel_params(c) for c in gap))
            layer.output_fixed_params = int(sum(c.count_params() for c in gap
                                                if isinstance(c, SkipAdd) and c.built))

    def _put_layers_in_order(self):
        """Sub-layers tracked in construction order after a swap (see `_keras_internals.order_tracked_layers`)."""
        order = ([self.feature_select] + list(self.gated_layers) + [c for gap in self._connectors for c in gap]
                 + [s for s in self.link_selects if s is not None])
        _keras_internals.order_tracked_layers(self, order)
        self._annotate_channel_params()

    def replace_connectors(self, gap, layers):
        """Swaps in the (sliced) layers of gap `gap`, in place and in order (see :meth:`replace_gated_layers`)."""
        self._tracker.unlock()
        try:
            current = self._connectors[gap]
            while current:
                current.pop()
            current.extend(layers)
        finally:
            self._tracker.lock()
        self._put_layers_in_order()

    def build(self, input_shape):
        if tuple(input_shape[1:]) != self.input_shape_:
            raise ValueError(
                f"DynHPModel expects inputs of shape (batch, {', '.join(map(str, self.input_shape_))}); "
                f"received shape {tuple(input_shape)}."
            )
        if not self.feature_select.built:
            self.feature_select.build((None,) + self.input_shape_)
        shape = (None,) + self.input_shape_[:-1] + (self.feature_select.output_dim,)
        saved = {}
        for i, layer in enumerate(self.gated_layers):
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
            if i + 1 == len(self.gated_layers):
                break
            produced = shape
            for connector in self._connectors[i]:
                try:
                    if isinstance(connector, SkipSave):
                        saved[connector.key] = shape
                    elif isinstance(connector, SkipAdd):
                        if not connector.built:
                            connector.build([shape, saved[connector.key]])
                        if connector.shortcut_shape(saved[connector.key])[1:] != shape[1:]:
                            raise ValueError(
                                f"it adds shape {connector.shortcut_shape(saved[connector.key])} to {shape}.")
                        continue
                    if not connector.built:
                        connector.build(shape)
                    shape = tuple(connector.compute_output_shape(shape))
                except ValueError as e:
                    raise ValueError(
                        f"Layer '{connector.name}' cannot take the output of gated layer '{layer.name}' "
                        f"(shape {shape}): {e} The inputs may be too small for this network.") from None
            if len(produced) > 2 and len(shape) == 2:  # flattened: the features of the channels
                if self.link_selects[i] is None:
                    self.link_selects[i] = FeatureSelect(int(shape[-1]), self._link_indices[i],
                                                         name=f"feature_select_{i + 1}")
                    self.link_selects[i].build(shape)
                shape = (None, self.link_selects[i].output_dim)
        self._annotate_channel_params()
        self.built = True

    def call(self, inputs, training=None, probes=None):
        """Forward pass; with `probes` (one zero tensor per gated layer's pre-activation,
        added to it) also returns each gated layer's gated inputs: `(outputs, gated)`."""
        expected = self.input_shape_
        if tuple(inputs.shape[1:]) != expected and (
                len(inputs.shape) != len(expected) + 1
                or any(d is not None and d != e for d, e in zip(inputs.shape[1:], expected))):
            raise ValueError(
                f"DynHPModel expects inputs of shape (batch, {', '.join(map(str, expected))}); received "
                f"shape {tuple(inputs.shape)}."
            )
        x = self.feature_select(inputs)
        gated, saved = [], {}
        for i, layer in enumerate(self.gated_layers):
            if probes is None:
                x = layer(x, training=training)
            else:
                x, a = layer(x, training=training, probe=probes[i])
                gated.append(a)
            if i + 1 < len(self.gated_layers):
                for connector in self._connectors[i]:
                    if isinstance(connector, SkipSave):
                        saved[connector.key] = x
                    elif isinstance(connector, SkipAdd):
                        x = connector([x, saved[connector.key]], training=training)
                    else:
                        x = connector(x, training=training)
                if self.link_selects[i] is not None:
                    x = self.link_selects[i](x)
        if self.penalty == "size":  # eq. 11 needs every layer's gates: added here, not per layer
            self.add_loss(penalties.size_penalty(self.gated_layers, self.links()))
        if training and self._budget is not None:
            self.add_loss(self._budget_term())
        return x if probes is None else (x, gated)

    def _budget_term(self):
        """mu * E[S] / M, and the dual-ascent step of mu (eq. 13); see :mod:`keras_dynhp.budget`."""
        max_bytes = self._budget
        expected = memory.BYTES_PER_NUMBER * penalties.expected_params(self.gated_layers, self.links())
        mu = ops.convert_to_tensor(self.budget_multiplier)
        violation = ops.clip(ops.stop_gradient(expected) / self.budget_target_bytes - 1.0, -1.0, 1.0)
        self.budget_multiplier.assign(ops.maximum(mu + self.budget_step * violation, 0.0))
        return ops.stop_gradient(mu) * expected / float(max_bytes)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.gated_layers[-1].output_units)

    @property
    def input_shape_per_example(self):
        """The shape of one input example, e.g. `(784,)` or `(28, 28, 1)`."""
        return self.input_shape_

    @property
    def example_size(self):
        """Input numbers per example (the memory accounting's batch term): 784 for 28x28 images."""
        return int(np.prod(self.input_shape_))

    def links(self):
        """Per gated layer, how its inputs read the previous layer's outputs (for the penalty and surgery).

        None: input j is output j (dense to dense, or convolution to convolution
        through pooling). After a Flatten: an int array, the channel each
        current input feature comes from (Keras flattens channels last, so
        feature f of the flattened map is channel f mod C). Entry 0 (the model's
        inputs) is always None.
        """
        links = [None]
        for i, select in enumerate(self.link_selects):
            if select is None:
                links.append(None)
                continue
            channels = self.gated_layers[i].output_units
            flat = np.arange(select.input_dim) if select.indices is None else np.asarray(select.indices)
            links.append((flat % channels).astype("int64"))
        return links

    def select_link_features(self, gap, kept):
        """Keeps only the given ones of the features gated layer `gap + 1` reads after a Flatten.

        Channels none of whose features is left are dropped from the flattened
        map, so the gather's indices are renumbered for the narrower map.

        Args:
            gap: Index of the gap (the producer's index).
            kept: Sorted indices into the features the consumer reads now.

        Returns:
            The kept channels of the producer (sorted indices into its outputs).
        """
        select = self.link_selects[gap]
        channels = self.gated_layers[gap].output_units
        flat = np.arange(select.input_dim) if select.indices is None else np.asarray(select.indices)
        flat = flat[np.asarray(kept)]
        kept_channels = np.unique(flat % channels)
        renumbered = narrower_flat_map(flat, channels, kept_channels)
        width = select.input_dim // channels * len(kept_channels)
        select.input_dim = int(width)
        select.set_indices(renumbered.tolist())
        return kept_channels

    def units(self):
        """Gated input units per layer (the actual, physical sizes)."""
        return [layer.gated_units for layer in self.gated_layers]

    def architecture(self):
        """Layer widths from input to output, e.g. [784, 300, 100, 10] (gated input units, then classes)."""
        return self.units() + [self.gated_layers[-1].output_units]

    def layer_widths(self):
        """Per gated layer, `(input units, output units)`: a convolution's channels, a dense layer's units.

        Example: LeNet-5-Caffe gives `[(1, 20), (20, 50), (800, 500), (500, 10)]`;
        the Louizos et al. notation 20-50-800-500 lists each convolution's
        outputs and each dense layer's inputs.
        """
        return [(layer.gated_units, layer.output_units) for layer in self.gated_layers]

    def pruning_groups(self):
        """The groups hard pruning works on (see :mod:`keras_dynhp.surgery`)."""
        return surgery.chain_groups(len(self.gated_layers))

    def select_features(self, kept):
        """Keeps only the given ones of the currently selected input features.

        Args:
            kept: Sorted indices into the features the first gated layer sees now.
        """
        current = self.feature_select.indices
        current = np.arange(self.input_dim) if current is None else np.asarray(current)
        self.feature_select.set_indices(current[np.asarray(kept)].tolist())

    def replace_gated_layers(self, layers):
        """Swaps in (pruned) gated layers, keeping the layer order Keras tracks.

        The order matters: it is the order of `trainable_variables`, hence of the
        optimizer's state in saved files. Keras 3 locks a built layer's state
        and has no public way to swap sub-layers: this is the one place the
        project opens Keras's tracker (for the swap only).
        """
        self._tracker.unlock()
        try:
            while self.gated_layers:
                self.gated_layers.pop()
            self.gated_layers.extend(layers)
        finally:
            self._tracker.lock()
        self._put_layers_in_order()

    def export(self, filepath, format="tf_saved_model", verbose=None, **kwargs):
        """Keras's `export`; `format="litert"` (or "tflite") writes the compact model's LiteRT file.

        With "litert" the gates are folded and pruned units removed first, as
        :func:`keras_dynhp.export_tflite` does (its keyword arguments, e.g.
        `quantization="int8", representative_data=x`, pass through). Other
        formats export the gated model itself with Keras.
        """
        if format in ("litert", "tflite"):
            from keras_dynhp.export import export_tflite

            return export_tflite(self, filepath, **kwargs)
        return super().export(filepath, format=format, verbose=verbose, **kwargs)

    def summary(self, *args, print_fn=None, **kwargs):
        """Keras's summary, then what its parameter count holds besides stored weights and biases."""
        super().summary(*args, print_fn=print_fn, **kwargs)
        stored = self.count_params_stored()
        gates = sum(layer.gated_units for layer in self.gated_layers)
        text = (f" Stored weights and biases: {stored:,} ({memory.network_bytes(stored):,} bytes, the paper's "
                f"accounting; `count_params_stored`).\n Besides them Keras counts, per gated input unit, one "
                f"gate parameter log_alpha ({gates:,}) and one activity counter ({gates:,}), plus one observation "
                f"counter per layer and the model budget's 3 scalars: training state that `keras_dynhp.strip` "
                "drops.")
        (print_fn or print)(text)

    def count_params_stored(self):
        """Weights + biases stored by the network (the paper's parameter count).

        Includes the layers between gated layers (a BatchNormalization's 4
        numbers per channel, a depthwise kernel, a skip's shortcut layers).
        """
        return (sum(layer.num_params() for layer in self.gated_layers)
                + sum(c.count_params() for gap in self._connectors for c in gap if c.built and c.weights))

    def network_bytes(self):
        """Bytes of the network in the paper's accounting."""
        return memory.network_bytes(self.count_params_stored())

    def l0_penalty(self):
        """Total expected-L0 penalty (float): the layers' terms, plus eq. 11 with `penalty="size"`."""
        total = sum(float(layer.l0_penalty(numpy=True)) for layer in self.gated_layers)
        if self.penalty == "size":
            total += float(penalties.size_penalty(self.gated_layers, self.links(), numpy=True))
        return total

    def expected_bytes(self):
        """Expected network bytes under the gates' distribution, 4 * E[params] (eq. 11)."""
        return memory.BYTES_PER_NUMBER * float(
            penalties.expected_params(self.gated_layers, self.links(), numpy=True))

    def delivered_bytes(self):
        """Network bytes of the compact model `strip` would make now (units with a non-zero gate)."""
        return memory.network_bytes(penalties.delivered_params(self.gated_layers, self.links()))

    def expected_active_units(self):
        """sum_j P(z_j > 0) per gated layer."""
        return [float(layer.expected_active_units(numpy=True)) for layer in self.gated_layers]

    def set_deterministic_training(self, on):
        """Trains with the deterministic gates (the model-size budget's recovery epochs) or not."""
        on = bool(on)
        if any(layer.deterministic_training != on for layer in self.gated_layers):
            for layer in self.gated_layers:
                layer.deterministic_training = on
            self.train_function = None

    def save(self, filepath, *args, **kwargs):
        """Keras's `save`; on JAX without loading TensorFlow (see :mod:`keras_dynhp._keras_internals`)."""
        with _keras_internals.tensorflow_left_unloaded():
            return super().save(filepath, *args, **kwargs)

    def get_weights(self):
        """Keras's `get_weights()`, as a :class:`ModelWeights` that also remembers the network's shape."""
        values = {id(v): ops.convert_to_numpy(v) for v in self.weights}
        return ModelWeights([values[id(v)] for v in self.weights], surgery.snapshot_architecture(self, values))

    def set_weights(self, weights):
        """Keras's `set_weights`; weights from `get_weights()` before hard pruning restore the pruned units.

        Args:
            weights: A list of arrays shaped like `get_weights()`'s, or a
                :class:`ModelWeights` of this model from any earlier epoch: its
                network (units, input features, optimizer state) is put back
                first when it differs from the current one.
        """
        snapshot = getattr(weights, "architecture", None)
        if snapshot is not None and snapshot.signature() != surgery.architecture_signature(self):
            surgery.restore_architecture(self, snapshot)
        super().set_weights(list(weights))

    def invalidate_functions(self):
        """Forgets traced train/test/predict functions (after shapes changed)."""
        self.train_function = None
        self.test_function = None
        self.predict_function = None

    def get_config(self):
        config = {
            "name": self.name,
            "gated_layers": [keras.saving.serialize_keras_object(layer) for layer in self.gated_layers],
            "input_dim": self.input_dim,
            "input_indices": self.feature_select.indices,
            "training_state": dict(self.training_state),
            "penalty": self.penalty,
        }
        if self.input_shape_ != (self.input_dim,) or any(self._connectors):  # a convolutional network
            config["input_shape"] = list(self.input_shape_)
            config["connectors"] = [[keras.saving.serialize_keras_object(c) for c in gap]
                                    for gap in self._connectors]
            config["link_indices"] = [None if s is None else s.indices for s in self.link_selects]
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ----------------------------------------------------------- train step
    # The train step itself is the backend's (keras_dynhp.backend); this is its
    # backend-neutral bookkeeping.
    def record_step(self, x, y, y_pred, sample_weight, loss, penalty, gated, preact_grads):
        """Records ||S||_1 and F of one step, then Keras's loss and metrics; returns the logs.

        Args:
            gated: Each gated layer's (gated) inputs of the step.
            preact_grads: The gradient of the loss w.r.t. each layer's pre-activations.
        """
        batch = ops.shape(x)[0]

        def variance_l1():  # ||S||_1: each gated layer's own term (eq. 8)
            total = 0.0
            for layer, a, d in zip(self.gated_layers, gated, preact_grads):
                total = total + layer.variance_l1(a, d, batch)
            return ops.maximum(total, 0.0)

        if self._variance_every == 1:  # the default: no branch, no weights
            self.variance_tracker.update_state(variance_l1())
            self.data_loss_tracker.update_state(loss - penalty)
        else:  # measured every `variance_every` steps (weight 0 elsewhere)
            measure = ops.equal(ops.mod(self.optimizer.iterations - 1, self._variance_every), 0)
            s_l1 = ops.cond(measure, variance_l1, lambda: ops.zeros((), "float32"))
            weight = ops.cast(measure, "float32")
            self.variance_tracker.update_state(s_l1, sample_weight=weight)
            self.data_loss_tracker.update_state(loss - penalty, sample_weight=weight)
        # Same bookkeeping as Keras's own train_step.
        self._loss_tracker.update_state(loss, sample_weight=batch)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_data=None,
        shuffle=True,
        initial_epoch=0,
        mode="sp",
        gamma=0.5,
        min_units=1,
        prune_start_epoch=0,
        alpha_bs=DEFAULT_ALPHA_BS,
        memory_budget=None,
        initial_batch_size=16,
        variance_every=1,
        seed=None,
        validation_batch_size=None,
        pruning=None,
        batch_policy=None,
        model_budget=None,
        validation_split=0.0,
        sample_weight=None,
        class_weight=None,
        steps_per_epoch=None,
        validation_steps=None,
        validation_freq=1,
        accounting="paper",
        learning_rate_decay="cosine",
    ):
        """Trains with soft pruning (`sp`), hard pruning (`hp`) or DynHP (`dynhp`).

        The short forms (`gamma`, `min_units`, `prune_start_epoch`; `batch_size`;
        `alpha_bs`, `memory_budget`, `initial_batch_size`, `variance_every`)
        build the policies; pass `pruning=` / `batch_policy=` objects instead to
        keep or share them (a :class:`~keras_dynhp.batch_size.DynamicBatchSize`
        remembers its current batch size, so passing the same object to a
        resumed `fit` goes on where it stopped).

        Args:
            x: NumPy inputs of shape (n, input_dim), a
                :class:`keras_dynhp.data.ScaledArray` (e.g. uint8 images held
                as uint8, converted batch by batch), or a `tf.data.Dataset` of
                `(x, y)`; for `dynhp` the dataset must be *unbatched* (it is
                re-batched every epoch). Arrays are served batch by batch in
                each epoch's seeded order, never copied whole.
            y: NumPy integer labels (None when `x` is a dataset).
            batch_size: Batch size for `sp`/`hp` (default 32).
            epochs: Number of epochs.
            verbose: 0, 1 (progress bar), 2 (one line per epoch) or "auto".
            callbacks: Keras callbacks; they see one training run whose epoch-end
                logs include pruning and memory figures (see below).
                `EarlyStopping(restore_best_weights=True)` restores the best
                epoch's whole network, units removed since included (with a
                model budget, the best among the epochs whose network fits it);
                the History's `restored_epoch` says which (None: none restored).
                Keras's `BackupAndRestore` is refused (use
                :class:`keras_dynhp.callbacks.BackupAndRestore`, which resumes
                across pruning).
            validation_data: `(x_val, y_val)` or a batched dataset. Validation
                runs at the end of each epoch *before* that epoch's surgery.
            shuffle: Shuffle training arrays every epoch.
            initial_epoch: Epoch to start from (for resuming).
            mode: "sp", "hp" or "dynhp".
            gamma: Hard-pruning threshold on activation rates (eq. 7).
            min_units: No gated layer drops below this many input units.
            prune_start_epoch: First epoch (0-based) at whose end pruning happens.
            alpha_bs: DynHP smoothing parameter in [0, 1) (eq. 8); the default
                0.998 grows the batch slowly (the best measured; the paper's
                values are 0.971-0.989).
            memory_budget: DynHP budget, bytes or a string like "1433KiB".
            accounting: What `memory_budget` counts (dynhp): "paper" (weights and
                biases plus one input batch, the paper's eq. 9-10) or "full" (also
                gate parameters and counters, gradients, optimizer slots and the
                batch's activations, :func:`keras_dynhp.memory.full_accounting`).
                History records both every epoch (`mo_bytes`, `full_bytes`).
            initial_batch_size: DynHP batch size of the first epoch. A DynHP
                epoch at batch b visits `n - n % b` examples of its shuffled
                order (a different few are left out every epoch), so that a
                new batch size costs one compiled step, not two.
            variance_every: DynHP measures gradient variance every k steps.
            seed: Seed of the shuffling.
            validation_batch_size: Batch size for validation arrays (default 256).
            pruning: A :class:`~keras_dynhp.pruning.HardPruning` (hp, dynhp).
            batch_policy: A :class:`~keras_dynhp.batch_size.FixedBatchSize` or
                :class:`~keras_dynhp.batch_size.DynamicBatchSize` (dynhp).
            validation_split: As in Keras: the last fraction of the training
                arrays (before shuffling) is held out for validation; ignored
                when `validation_data` is given. Arrays only.
            sample_weight: As in Keras: one non-negative weight per training
                example (arrays; a dataset yields `(x, y, w)` elements
                instead), carried through every epoch's shuffling and
                re-batching, and split with `validation_split`. The loss,
                DynHP's gradient variance and its loss F (eq. 8) are the
                weighted ones.
            class_weight: As in Keras: `{class id: weight}`, each example
                weighing its class's value (1 for classes left out); not
                together with `sample_weight`.
            steps_per_epoch: Not supported: an epoch is one pass over the data,
                because hard pruning and the batch rule act at epoch ends.
            validation_steps: Not supported (validation uses all of its data).
            validation_freq: Only 1 (validation runs every epoch, before surgery).
            learning_rate_decay: "cosine" (the default): the optimizer's
                learning rate falls from its value at the start of the fit to
                0 at its last epoch, along a cosine, one step per epoch
                (:class:`~keras_dynhp.training.LearningRateDecay`; the best
                measured); the rate is put back when the fit ends. None keeps
                the optimizer's rate (the paper's constant Adam 1e-3). An
                optimizer compiled with a schedule of its own keeps it either way,
                and so do fits given a `LearningRateScheduler` or
                `ReduceLROnPlateau` callback (the user's rule wins).
            model_budget: The most bytes the trained network may store (paper
                accounting: 4 bytes per weight and bias), as bytes, a string
                such as "250KB" (KB = 1000 B), or a
                :class:`~keras_dynhp.budget.ModelBudget` (to set its deadline
                and multiplier step). Any mode; see :mod:`keras_dynhp.budget`.

        Returns:
            A `keras.callbacks.History`. Per epoch it records `loss`, metrics,
            `l0_penalty`, `expected_active_<l>` and `units_<l>` (gated input units
            of layer l), `pruned_<l>`, `params`, `network_bytes`, `batch_size`,
            `batch_bytes`, `mo_bytes` (network + batch, in the epoch),
            `memory_total_bytes` (running sum of MO), `full_bytes` (the full accounting
            of the epoch's first step) and `activation_bytes` (its activation term: what
            one batch keeps for the backward pass, an estimate), `surgery_ms`; for `dynhp`
            also `grad_var_l1` (||S||_1), `data_loss` (F), `next_batch_size`,
            `budget_bytes` and `budget_headroom_bytes`. Every mode records
            `expected_bytes` (4 * E[params], eq. 11) and `delivered_bytes` (the
            compact model's size); with a model budget also
            `model_budget_bytes`, `budget_target_bytes` (eq. 12),
            `budget_multiplier` (mu, eq. 13) and `budget_removed_units`.

        Raises:
            ValueError: For an unknown mode, bad arguments or inputs of the wrong
                shape, when the memory budget cannot hold the initial network and
                batch, and when no network with `min_units` per layer fits the
                model budget.
        """
        if mode not in MODES:
            raise ValueError(f"Unknown `mode`={mode!r}; expected one of {MODES}.")
        for name, value, default, why in (
                ("steps_per_epoch", steps_per_epoch, None, ("an epoch is one pass over the data here, "
                 "because hard pruning and the batch rule act at epoch ends; take a subset instead")),
                ("validation_steps", validation_steps, None, "validation uses all of its data"),
                ("validation_freq", validation_freq, 1, "validation runs every epoch (before surgery)")):
            if not (value is default or (default is not None and isinstance(value, int) and value == default)):
                raise ValueError(f"DynHPModel.fit does not support `{name}`: {why}.")
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
                or not 0.0 <= float(validation_split) < 1.0:
            raise ValueError(f"`validation_split` must be in [0, 1); received {validation_split!r}.")
        sample_weight = _example_weights(x, y, sample_weight, class_weight)
        if validation_split and validation_data is None:
            x, y, sample_weight, validation_data = _split_off_validation(x, y, float(validation_split),
                                                                         sample_weight)
        if getattr(self, "optimizer", None) is None or not self.compiled:
            raise ValueError("Compile the model before calling `fit` (build_mlp compiles it for you).")
        for name, value, low in (("epochs", epochs, 0), ("initial_epoch", initial_epoch, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}; received {name}={value!r}.")
        if initial_epoch > epochs:
            raise ValueError(f"`initial_epoch` ({initial_epoch}) is past `epochs` ({epochs}).")
        backups = [cb for cb in callbacks or [] if isinstance(cb, dynhp_callbacks.BackupAndRestore)]
        if len(backups) > 1:
            raise ValueError("Pass at most one keras_dynhp.callbacks.BackupAndRestore.")
        if backups:  # an interrupted fit: the model as it was saved, then on from the next epoch
            done = backups[0].restore(self)
            if done > initial_epoch:
                if done >= epochs:
                    raise ValueError(f"The backup in {backups[0].backup_dir} has done all {done} epochs of this "
                                     "fit: delete it to train again.")
                initial_epoch = done
        if mode == "dynhp" and batch_size is not None:
            raise ValueError(
                'mode="dynhp" sets the batch size itself: pass `initial_batch_size` (the first '
                "epoch's batch, default 16) instead of `batch_size`.")
        resuming = initial_epoch > 0 and self.training_state.get("epoch") == initial_epoch
        if resuming and mode == "dynhp" and batch_policy is None and self.training_state.get("batch_size"):
            initial_batch_size = int(self.training_state["batch_size"])  # where the run stopped
        pruning, batch_policy = training.resolve_policies(
            mode, batch_size, gamma, min_units, prune_start_epoch, alpha_bs, memory_budget,
            initial_batch_size, variance_every, pruning, batch_policy, accounting)
        gated_units = [layer.gated_units for layer in self.gated_layers if layer.gate_inputs]
        if pruning is not None and gated_units and pruning.min_units > min(gated_units):
            raise ValueError(
                f"`min_units`={pruning.min_units} is larger than a gated layer of this model (units "
                f"{self.units()}): no layer can drop below min_units, so lower it.")
        training.check_callbacks(callbacks, pruning)
        if learning_rate_decay not in training.LEARNING_RATE_DECAYS:
            raise ValueError(f"`learning_rate_decay` must be one of {training.LEARNING_RATE_DECAYS}; "
                             f"received {learning_rate_decay!r}.")
        decay = None
        if (learning_rate_decay is not None and training.LearningRateDecay.decayable(self.optimizer)
                and not training.sets_learning_rate(callbacks)):
            base = self.training_state.get("base_learning_rate") if resuming else None
            decay = training.LearningRateDecay(
                base if base is not None else float(ops.convert_to_numpy(self.optimizer.learning_rate)), epochs)
        batch_policy.check_fits(self.count_params_stored(), self.example_size,
                                footprint=training.policy_footprint(self, batch_policy))
        budget = self._resolve_budget(model_budget, epochs, resuming,
                                      pruning.min_units if pruning is not None else min_units)
        verbose = 1 if verbose == "auto" else int(verbose)

        num_classes = self.gated_layers[-1].output_units if self._sparse_labels() else None
        pipeline = EpochPipeline(x, y, self.input_shape_, rebatch=mode == "dynhp", shuffle=shuffle, seed=seed,
                                 num_classes=num_classes, whole_batches=mode == "dynhp",
                                 sample_weight=sample_weight)
        if pipeline.n is not None and batch_policy.batch_size > pipeline.n:
            raise ValueError(
                f"The first batch ({batch_policy.batch_size}) is larger than the {pipeline.n} training "
                "examples: lower the batch size (`batch_size` or `initial_batch_size`).")
        self._set_dataset_size(pipeline.n)
        validation = validation_inputs(validation_data, self.input_shape_, validation_batch_size, num_classes)
        step_by_step = self._fit_data_parallel(batch_policy, pipeline, validation)
        self._configure_train_step(batch_policy.variance_every if batch_policy.measures_variance else None)
        try:
            return training.run_epochs(
                self, super().fit, pipeline, validation, epochs, initial_epoch, callbacks, verbose,
                pruning, batch_policy,
                memory_total_bytes=self.training_state.get("memory_total_bytes", 0) if resuming else 0,
                budget=budget, step_by_step=step_by_step, learning_rate_decay=decay)
        except backend.framework_errors() as e:  # a bad batch that only a dataset can hide
            classes = self.gated_layers[-1].output_units
            text = str(getattr(e, "message", e))
            if "labels must be class ids" in text:
                raise ValueError(
                    f"The dataset holds labels outside [0, {classes}): labels must be class ids in "
                    f"[0, {classes}) for this {classes}-class model.") from None
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            detail = lines[-1][:300] if lines else type(e).__name__
            raise ValueError(
                f"A training or validation batch could not be used ({detail}). Check that the labels "
                f"are class ids in [0, {classes}) and the inputs finite numbers of shape "
                f"{_shape_text(self.input_shape_)}.") from None
        finally:
            self.set_deterministic_training(False)  # the budget's recovery epochs end with the fit
            if decay is not None:
                self.optimizer.learning_rate = decay.base
            if self._report_variance:  # evaluate / predict report the loss and compiled metrics only
                self._report_variance = False
                self.test_function = None

    def _fit_data_parallel(self, batch_policy, pipeline, validation):
        """Keeps every batch divisible by the devices a `keras.distribution` splits it over.

        Returns:
            Whether the steps must run one at a time (data parallelism over CPU
            devices: XLA's CPU collectives can deadlock with steps in flight).
        """
        shards = backend.data_shards()
        if shards == 1:
            return False
        if isinstance(batch_policy, FixedBatchSize):
            if batch_policy.batch_size % shards:
                raise ValueError(
                    f"The distribution splits every batch over {shards} devices: `batch_size` "
                    f"({batch_policy.batch_size}) must be a multiple of {shards}.")
        else:
            if batch_policy.multiple_of % shards:
                if batch_policy.multiple_of != 1:
                    raise ValueError(
                        f"The distribution splits every batch over {shards} devices; the batch policy's "
                        f"`multiple_of` ({batch_policy.multiple_of}) is not a multiple of {shards}.")
                batch_policy.multiple_of = shards
            if batch_policy.batch_size % shards:
                raise ValueError(
                    f"The distribution splits every batch over {shards} devices: the first DynHP batch "
                    f"(`initial_batch_size`={batch_policy.batch_size}) must be a multiple of {shards}.")
        if pipeline.steps(batch_policy.batch_size) is not None and pipeline._fixed is None:
            pipeline.multiple = shards
        data = validation.get("validation_data")
        if isinstance(data, tuple):
            size = validation["validation_batch_size"]
            if size % shards or len(data[0]) % shards:
                raise ValueError(
                    f"The distribution splits every batch over {shards} devices: the validation arrays "
                    f"({len(data[0])} examples) and `validation_batch_size` ({size}) must both be "
                    f"multiples of {shards}.")
        return backend.data_devices_are_cpus()

    def _resolve_budget(self, model_budget, epochs, resuming, min_units):
        """The fit's ModelBudget (or None), resolved and checked; arms (or disarms) the train step."""
        budget = ModelBudget.get(model_budget)
        if budget is not None:
            if isinstance(min_units, bool) or not isinstance(min_units, (int, np.integer)) or min_units < 1:
                raise ValueError(f"`min_units` must be an integer >= 1; received min_units={min_units!r}.")
            budget.check_feasible(self.gated_layers, min_units, self.links())
            state = self.training_state if resuming else {}
            if budget.deadline is None and state.get("budget_deadline") is not None:
                budget.deadline = int(state["budget_deadline"])
            budget.resolve(epochs, state.get("budget_start_bytes") or self.delivered_bytes())
            if not resuming:
                self.budget_multiplier.assign(0.0)
        armed = budget.max_bytes if budget is not None and budget.uses_multiplier else None
        if armed != self._budget:
            self._budget = armed
            self.train_function = None
        return budget

    def _sparse_labels(self):
        """Whether the compiled loss takes class ids (sparse categorical cross-entropy)."""
        loss = getattr(self, "loss", None)
        name = loss if isinstance(loss, str) else getattr(loss, "name", type(loss).__name__)
        return "sparse_categorical" in str(name)

    # ------------------------------------------------------------- helpers
    def _configure_train_step(self, variance_every):
        """Selects the train step (variance measured every k steps, or not: None)."""
        if variance_every != self._variance_every:
            self._variance_every = variance_every
            self.train_function = None
        if (variance_every is not None) != self._report_variance:
            self._report_variance = variance_every is not None
            self.test_function = None

    def _set_dataset_size(self, n):
        if n is None:
            return
        for layer in self.gated_layers:
            if layer.dataset_size != n:
                layer.dataset_size = int(n)
                self.train_function = None


def _shape_text(shape):
    """`(784,)` as "(n, 784)", `(28, 28, 1)` as "(n, 28, 28, 1)"."""
    return "(n, " + ", ".join(str(d) for d in shape) + ")"


def _example_weights(x, y, sample_weight, class_weight):
    """`fit`'s per-example weights (Keras's meaning), or None; datasets carry their own."""
    if sample_weight is None and class_weight is None:
        return None
    if sample_weight is not None and class_weight is not None:
        raise ValueError("Pass `sample_weight` or `class_weight`, not both (as in Keras): multiply the class "
                         "weights into `sample_weight` instead.")
    if is_dataset(x):
        raise ValueError("With a tf.data.Dataset, put the weights in it as (x, y, sample_weight) elements; "
                         "`sample_weight` and `class_weight` are for NumPy arrays.")
    if y is None or not hasattr(x, "__len__"):
        raise ValueError("`sample_weight` and `class_weight` need NumPy arrays `x` and `y`.")
    if class_weight is not None:
        return class_weight_to_sample_weight(class_weight, y)
    return check_sample_weight(sample_weight, len(x))


def _split_off_validation(x, y, fraction, sample_weight=None):
    """Keras's `validation_split`: the last `fraction` of the arrays (and weights), before any shuffling."""
    if not isinstance(x, (np.ndarray, ScaledArray)) or y is None:
        raise ValueError("`validation_split` needs NumPy arrays `x` and `y`; with a dataset pass "
                         "`validation_data` instead.")
    n = len(x)
    split = int(n * (1.0 - fraction))
    if split <= 0 or split >= n:
        raise ValueError(f"`validation_split`={fraction} leaves no training or no validation example of {n}.")
    y = np.asarray(y)
    x_fit, x_val = take_rows(x, slice(None, split)), take_rows(x, slice(split, None))
    if sample_weight is None:
        return x_fit, y[:split], None, (x_val, y[split:])
    return x_fit, y[:split], sample_weight[:split], (x_val, y[split:], sample_weight[split:])


def _compile_classifier(model, optimizer, learning_rate):
    """Compiles with `optimizer` (default Adam) and sparse categorical cross-entropy with accuracy."""
    model.compile(optimizer=optimizer or keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def build_mlp(
    hidden_units=(300, 100),
    input_dim=784,
    num_classes=10,
    activation="relu",
    l0_lambda=None,
    droprate_init=None,
    temperature=2.0 / 3.0,
    weight_decay=0.0,
    per_example_gates=True,
    learning_rate=1e-3,
    optimizer=None,
    compile=True,
    seed=None,
    penalty=penalties.DEFAULT_PENALTY,
    name="dynhp_mlp",
):
    """Builds (and compiles) a LeNet-300-100 style MLP of :class:`L0Dense` layers.

    Gates sit on the `input_dim` inputs and on every hidden layer's units. The
    output layer returns class probabilities (softmax).

    Args:
        hidden_units: Widths of the hidden layers.
        input_dim: Input width (784 for 28x28 images).
        num_classes: Number of classes.
        activation: Hidden activation.
        l0_lambda: L0 strength, a float or one value per gated layer (None:
            the penalty's setting, 0.001 for "size", the paper's 0.01 for
            "louizos"; :data:`keras_dynhp.penalty.SETTINGS`).
        droprate_init: Initial drop rate of the gates (None: 0.2 for "size",
            the paper's 0.5 for "louizos").
        temperature: Concrete temperature.
        weight_decay: L2 strength (gated, Louizos et al.).
        per_example_gates: Sample gates per example (paper) or per batch.
        learning_rate: Adam learning rate when `optimizer` is None.
        optimizer: Optimizer to compile with (default Adam).
        compile: Compile with sparse categorical cross-entropy and accuracy.
        seed: Seed of initialisers and gate noise.
        penalty: L0 penalty weighting: "size" (eq. 11, the expected model
            size; the default, the best measured) or "louizos" (eq. 5, the
            paper's: with `l0_lambda` and `droprate_init` left to None this
            is the paper's model); see :mod:`keras_dynhp.penalty`.
        name: Model name.

    Returns:
        A :class:`DynHPModel`.

    Example:
        >>> model = build_mlp([300, 100])
        >>> model.architecture(), model.count_params_stored()
        ([784, 300, 100, 10], 266610)
    """
    penalty, l0_lambda, droprate_init = penalties.resolve_settings(penalty, l0_lambda, droprate_init)
    hidden_units = list(hidden_units)
    n_layers = len(hidden_units) + 1
    lambdas = list(l0_lambda) if isinstance(l0_lambda, (list, tuple)) else [l0_lambda] * n_layers
    if len(lambdas) != n_layers:
        raise ValueError(
            f"`l0_lambda` needs one value per gated layer ({n_layers}); received {len(lambdas)}."
        )
    for i, units in enumerate(hidden_units):
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"`hidden_units[{i}]` must be a positive integer; received {units!r}.")
    widths = hidden_units + [num_classes]
    layers = []
    for i, units in enumerate(widths):
        last = i == len(widths) - 1
        layers.append(
            L0Dense(
                units,
                activation="softmax" if last else activation,
                l0_lambda=lambdas[i],
                droprate_init=droprate_init,
                temperature=temperature,
                weight_decay=weight_decay,
                per_example_gates=per_example_gates,
                kernel_initializer=keras.initializers.GlorotUniform(seed=None if seed is None else seed + i),
                seed=None if seed is None else seed + 100 + i,
                name=f"l0_dense_{i}",
            )
        )
    model = DynHPModel(layers, input_dim=input_dim, penalty=penalty, name=name)
    if compile:
        _compile_classifier(model, optimizer, learning_rate)
    return model


def build_lenet5(
    input_shape=(28, 28, 1),
    num_classes=10,
    filters=(20, 50),
    dense_units=500,
    kernel_size=5,
    l0_lambda=None,
    droprate_init=None,
    temperature=2.0 / 3.0,
    weight_decay=0.0,
    per_example_gates=True,
    learning_rate=1e-3,
    optimizer=None,
    compile=True,
    seed=None,
    penalty=penalties.DEFAULT_PENALTY,
    name="dynhp_lenet5",
):
    """Builds (and compiles) LeNet-5-Caffe (20-50-800-500, Louizos et al. 2018) of gated layers.

    `L0Conv2D(20, 5)` -> max-pool 2 -> `L0Conv2D(50, 5)` -> max-pool 2 -> Flatten
    -> `L0Dense(500)` -> `L0Dense(num_classes, softmax)`, ReLU inside. Gates sit
    on the second convolution's input channels (the first one's outputs), on
    the 800 flattened features (a channel of the second convolution goes when
    all its 16 features go) and on the 500 hidden units; the first
    convolution's image channels carry none (`gate_inputs=False`).

    Args:
        input_shape: Shape of one image, channels last.
        num_classes: Number of classes.
        filters: Output channels of the two convolutions.
        dense_units: Width of the hidden dense layer.
        kernel_size: Size of the square convolution kernels.
        l0_lambda: L0 strength, a float or one value per gated layer (4)
            (None: the penalty's setting, as in :func:`build_mlp`).
        droprate_init: Initial drop rate of the gates (None: the penalty's
            setting).
        temperature: Concrete temperature.
        weight_decay: L2 strength (gated, Louizos et al.).
        per_example_gates: Sample gates per example (paper) or per batch.
        learning_rate: Adam learning rate when `optimizer` is None.
        optimizer: Optimizer to compile with (default Adam).
        compile: Compile with sparse categorical cross-entropy and accuracy.
        seed: Seed of initialisers and gate noise.
        penalty: "size" (the default) or "louizos" (the paper's; see
            :func:`build_mlp` and :mod:`keras_dynhp.penalty`).
        name: Model name.

    Returns:
        A :class:`DynHPModel`.

    Example:
        >>> model = build_lenet5()
        >>> model.layer_widths(), model.count_params_stored()
        ([(1, 20), (20, 50), (800, 500), (500, 10)], 431080)
    """
    penalty, l0_lambda, droprate_init = penalties.resolve_settings(penalty, l0_lambda, droprate_init)
    filters = list(filters)
    if len(filters) != 2:
        raise ValueError(f"`filters` needs the two convolutions' output channels; received {filters!r}.")
    lambdas = list(l0_lambda) if isinstance(l0_lambda, (list, tuple)) else [l0_lambda] * 4
    if len(lambdas) != 4:
        raise ValueError(f"`l0_lambda` needs one value per gated layer (4); received {len(lambdas)}.")
    common = dict(droprate_init=droprate_init, temperature=temperature, weight_decay=weight_decay,
                  per_example_gates=per_example_gates)

    def init(i):
        return keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)

    def noise(i):
        return None if seed is None else seed + 100 + i

    layers = [
        L0Conv2D(filters[0], kernel_size, activation="relu", l0_lambda=lambdas[0], gate_inputs=False,
                 kernel_initializer=init(0), seed=noise(0), name="l0_conv_0", **common),
        L0Conv2D(filters[1], kernel_size, activation="relu", l0_lambda=lambdas[1],
                 kernel_initializer=init(1), seed=noise(1), name="l0_conv_1", **common),
        L0Dense(dense_units, activation="relu", l0_lambda=lambdas[2], kernel_initializer=init(2),
                seed=noise(2), name="l0_dense_2", **common),
        L0Dense(num_classes, activation="softmax", l0_lambda=lambdas[3], kernel_initializer=init(3),
                seed=noise(3), name="l0_dense_3", **common),
    ]
    connectors = [[keras.layers.MaxPooling2D(2, name="pool_0")],
                  [keras.layers.MaxPooling2D(2, name="pool_1"), keras.layers.Flatten(name="flatten")],
                  []]
    model = DynHPModel(layers, input_shape=input_shape, connectors=connectors, penalty=penalty, name=name)
    if compile:
        _compile_classifier(model, optimizer, learning_rate)
    return model


def load_model(filepath, compile=True, **kwargs):
    """Loads a `.keras` file saved from a :class:`DynHPModel` (or any model using keras_dynhp layers).

    `import keras_dynhp` is lazy (it loads no TensorFlow), so keras_dynhp's
    classes are registered with Keras only once one of its modules is used;
    this function makes sure they are (as `tfmot`'s `prune_scope` does for its
    wrappers) and then calls `keras.saving.load_model`.

    Args:
        filepath: The `.keras` file.
        compile: Restore the compiled optimizer, loss and metrics.
        **kwargs: Passed to `keras.saving.load_model`.

    Returns:
        The model.

    Example:
        >>> model = keras_dynhp.load_model("runs/demo/model.keras")   # doctest: +SKIP
    """
    from keras_dynhp import batch_size, pruning

    with _keras_internals.tensorflow_left_unloaded():  # a JAX process keeps TensorFlow out
        return keras.saving.load_model(filepath, compile=compile, **kwargs)

