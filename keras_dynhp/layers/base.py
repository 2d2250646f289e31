"""The interface of gated layers, and the registry new layer types join.

A gated layer carries one hard-concrete gate per *input unit* (a feature of a
dense layer; a channel of a convolution would be one unit) and owns everything
that depends on its own shapes (Torch-Pruning's "each layer type owns its
slicing", tfmot's `PrunableLayer`):

* its gate statistics (eq. 6, provided here),
* which axes of which of its weights follow its input and its output units
  (:meth:`GatedLayer.prunable_weights`), from which :meth:`GatedLayer.pruned`
  builds a smaller copy, and hard pruning slices the optimizer slots alike,
* its contribution to ||S||_1 (:meth:`GatedLayer.variance_l1`),
* its stored-parameter count (:meth:`GatedLayer.num_params`,
  :meth:`GatedLayer.params_for` at other widths, for the size penalty),
* its gate-free plain Keras equivalent (:meth:`GatedLayer.to_plain`).

Adding a layer type means writing its module (a `keras.layers.Layer` subclass
that also derives from :class:`GatedLayer`) and registering it with
:func:`register_gated_layer`; the model, hard pruning, the batch policy, the
memory accounting and export work through this interface only.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_dynhp.layers import gates

_REGISTRY = {}


def check_positive_int(name, value):
    """`value` as an int, or a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer; received {name}={value!r}.")
    return int(value)


def register_gated_layer(plain_class):
    """Class decorator: registers a gated layer type as the gated form of `plain_class`.

    Args:
        plain_class: The plain Keras layer class the gated type replaces (and is
            stripped back to), e.g. `keras.layers.Dense` for `L0Dense`.

    Returns:
        The decorator (it returns the class unchanged).

    Example:
        >>> registered_gated_layers()[keras.layers.Dense].__name__
        'L0Dense'
    """

    def decorate(cls):
        if not issubclass(cls, GatedLayer):
            raise TypeError(f"{cls.__name__} must derive from GatedLayer to be registered.")
        _REGISTRY[plain_class] = cls
        return cls

    return decorate


def registered_gated_layers():
    """A copy of the registry: plain Keras layer class -> gated layer class."""
    return dict(_REGISTRY)


def slice_array(value, in_axis, out_axis, keep_inputs=None, keep_outputs=None):
    """Keeps the given input units along `in_axis` and output units along `out_axis`.

    Args:
        value: NumPy array (a weight or an optimizer slot of the same shape).
        in_axis: Axis indexed by the layer's input units, or None.
        out_axis: Axis indexed by the layer's output units, or None.
        keep_inputs: Sorted indices of kept input units (None: all).
        keep_outputs: Sorted indices of kept output units (None: all).

    Returns:
        The sliced array.

    Example:
        >>> slice_array(np.arange(6).reshape(2, 3), 0, 1, [1], [0, 2]).tolist()
        [[3, 5]]
    """
    if in_axis is not None and keep_inputs is not None:
        value = np.take(value, keep_inputs, axis=in_axis)
    if out_axis is not None and keep_outputs is not None:
        value = np.take(value, keep_outputs, axis=out_axis)
    return value


def build_with_values(layer, input_shape, values, scope=None, created_in_init=()):
    """Builds an unbuilt `layer` whose weights start from the given values, in place.

    The weights are created by the layer's own `build` with initializers that
    return the values: running the real initializers at new shapes would cost a
    compilation each on JAX, for nothing (hard pruning builds smaller copies).

    Args:
        layer: An unbuilt Keras layer.
        input_shape: The shape to build with.
        values: `(variable name, array)` pairs in the order of `layer.variables`
            after the build.
        scope: Name scope to build under (so variable paths stay the same).
        created_in_init: Names of variables the constructor creates (not
            `build`): assigned their values after the build.

    Raises:
        RuntimeError: If the built variables do not line up with `values` (a bug).
    """
    by_name = dict(values)
    make_weight = layer.add_weight

    def add_weight(*args, **kwargs):
        value = by_name.get(kwargs.get("name"))
        if value is not None:
            kwargs["initializer"] = lambda shape, dtype=None: np.asarray(value, dtype=dtype)
        return make_weight(*args, **kwargs)

    object.__setattr__(layer, "add_weight", add_weight)
    try:
        if scope:
            with keras.name_scope(scope):
                layer.build(input_shape)
        else:
            layer.build(input_shape)
    finally:
        object.__delattr__(layer, "add_weight")
    if len(layer.variables) != len(values):
        raise RuntimeError(f"The copy of '{layer.name}' has a different set of variables.")
    for variable, (name, value) in zip(layer.variables, values):
        if variable.name != name or tuple(variable.shape) != tuple(np.shape(value)):
            raise RuntimeError(f"The copy of '{layer.name}': variable {variable.name} does not line up.")
        if variable.name in created_in_init:
            variable.assign(value)


class GatedLayer:
    """Mixin of layers whose input units carry hard-concrete L0 gates.

    Subclasses are `keras.layers.Layer`s that call :meth:`add_gates` in `build`
    and implement the abstract methods below. Gate variables: `log_alpha`
    (trainable, one per input unit), `gate_active_count` and
    `gate_observations` (non-trainable counters of eq. 6).
    """

    temperature = gates.DEFAULT_TEMPERATURE
    per_example_gates = True
    collect_gate_stats = True
    #: False: the layer's input units carry no gates (they are always on and never
    #: pruned), e.g. a first convolution's image channels. The gate variables still
    #: exist (non-trainable, so every layer has the same variables), but gates read 1.
    gate_inputs = True
    #: Train with the deterministic (inference) gates instead of sampled ones, and
    #: count no gate statistics: the model-size budget's recovery epochs set it
    #: (:mod:`keras_dynhp.budget`); not part of the layer's config.
    deterministic_training = False
    #: Numbers stored per output unit by the per-channel layers between this layer and
    #: the next gated one (BatchNormalization, depthwise kernels;
    #: :mod:`keras_dynhp.layers.channels`): set by the model, counted in the size
    #: wherever it is computed (:func:`keras_dynhp.penalty.network_params`); not part of
    #: the layer's config.
    output_channel_params = 0
    #: Numbers stored in the same gap that do not follow this layer's outputs (a skip
    #: connection's shortcut layers, :mod:`keras_dynhp.layers.skip`): set by the model.
    output_fixed_params = 0

    # ------------------------------------------------------------- options
    def set_gate_options(self, droprate_init, temperature, l0_lambda, weight_decay, penalty, dataset_size,
                         per_example_gates, collect_gate_stats, seed, gate_inputs=True):
        """Checks and sets the gate and penalty arguments every layer type takes (its `__init__` calls it).

        Raises:
            ValueError: For an argument out of range, named in the message.
        """
        from keras_dynhp.penalty import check_penalty

        if not (0.0 < float(droprate_init) < 1.0):
            raise ValueError(
                f"`droprate_init` must be in the open interval (0, 1); received droprate_init={droprate_init!r}.")
        if not float(temperature) > 0.0:
            raise ValueError(f"`temperature` must be > 0; received temperature={temperature!r}.")
        if not float(l0_lambda) >= 0.0:
            raise ValueError(f"`l0_lambda` must be >= 0; received l0_lambda={l0_lambda!r}.")
        if not float(weight_decay) >= 0.0:
            raise ValueError(f"`weight_decay` must be >= 0; received weight_decay={weight_decay!r}.")
        self.penalty = check_penalty(penalty)
        self.dataset_size = None if dataset_size is None else check_positive_int("dataset_size", dataset_size)
        self.droprate_init = float(droprate_init)
        self.temperature = float(temperature)
        self.l0_lambda = float(l0_lambda)
        self.weight_decay = float(weight_decay)
        self.per_example_gates = bool(per_example_gates)
        self.collect_gate_stats = bool(collect_gate_stats)
        self.gate_inputs = bool(gate_inputs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def own_config(self):
        """This type's constructor arguments (beyond Keras's name, trainable and dtype) as live objects.

        :meth:`get_config` is Keras's base config plus these, serialised
        (:meth:`serialize_own_config`); :meth:`copy_config` is the same without
        serialising, for the copies hard pruning makes (Keras's serialisation
        imports TensorFlow, which a JAX training process does not need).
        """
        raise NotImplementedError

    def serialize_own_config(self):
        """:meth:`own_config` with activations and initializers serialised (for `get_config`)."""
        config = dict(self.own_config())
        for key, value in config.items():
            if key == "activation":
                config[key] = keras.activations.serialize(value)
            elif key.endswith("_initializer"):
                config[key] = keras.initializers.serialize(value)
        return config

    def copy_config(self):
        """The arguments of a copy of this layer, unserialised: `type(self)(**layer.copy_config())`."""
        return {"name": self.name, "trainable": self.trainable, "dtype": self.dtype_policy, **self.own_config()}

    def gate_config(self):
        """The config entries of :meth:`set_gate_options` but `seed` and `gate_inputs` (each type adds its own)."""
        return {
            "droprate_init": self.droprate_init,
            "temperature": self.temperature,
            "l0_lambda": self.l0_lambda,
            "weight_decay": self.weight_decay,
            "penalty": self.penalty,
            "dataset_size": self.dataset_size,
            "per_example_gates": self.per_example_gates,
            "collect_gate_stats": self.collect_gate_stats,
        }

    # ------------------------------------------------------------- gates
    def add_gates(self, n_gates, droprate_init, seed=None):
        """Creates `log_alpha` (from the initial drop rate) and the gate counters."""
        mean = math.log(1.0 - droprate_init) - math.log(droprate_init)
        self.log_alpha = self.add_weight(
            name="log_alpha",
            shape=(n_gates,),
            initializer=keras.initializers.RandomNormal(mean=mean, stddev=1e-2, seed=seed),
            constraint=gates.ClipLogAlpha(),
            trainable=self.gate_inputs,
        )
        self.gate_active_count = self.add_weight(
            name="gate_active_count", shape=(n_gates,), initializer="zeros", trainable=False
        )
        self.gate_observations = self.add_weight(
            name="gate_observations", shape=(), initializer="zeros", trainable=False
        )

    @property
    def gated_units(self):
        """Number of gated input units (None before the layer is built)."""
        return int(self.log_alpha.shape[0]) if self.built else None

    def sample_gates(self, batch_size):
        """Samples training gates (eq. 3-4): shape (batch, units), or (units,) per batch."""
        shape = (batch_size, self.gated_units) if self.per_example_gates else (self.gated_units,)
        u = gates.uniform_noise(shape, self.seed_generator.next())
        return gates.hard_concrete_sample(self.log_alpha, u, self.temperature)

    def record_gate_activity(self, z):
        """Adds the non-zero observations of sampled gates `z` to the counters (eq. 6)."""
        if not self.collect_gate_stats or not self.gate_inputs:
            return
        active = ops.cast(z > 0.0, "float32")
        if self.per_example_gates:
            self.gate_active_count.assign_add(ops.sum(active, axis=0))
            self.gate_observations.assign_add(ops.cast(ops.shape(z)[0], "float32"))
        else:
            self.gate_active_count.assign_add(active)
            self.gate_observations.assign_add(1.0)

    def gate_probability(self, numpy=False):
        """P(z_j > 0) for each input unit (eq. 4); ones without input gates.

        `numpy=True`: a NumPy array, computed without the backend (no
        compilation for a new width: the bookkeeping between epochs).
        """
        xp = gates.NumpyOps if numpy else ops
        if not self.gate_inputs:
            return xp.ones(self.log_alpha.shape)
        return gates.gate_probability(self._value(self.log_alpha, numpy), self.temperature, xp=xp)

    def inference_gates(self, numpy=False):
        """The deterministic gates used at inference; ones without input gates (`numpy`: as above)."""
        xp = gates.NumpyOps if numpy else ops
        if not self.gate_inputs:
            return xp.ones(self.log_alpha.shape)
        return gates.deterministic_gate(self._value(self.log_alpha, numpy), xp=xp)

    @staticmethod
    def _value(variable, numpy):
        """`variable` itself, or its value as a NumPy array when `numpy`."""
        return ops.convert_to_numpy(variable) if numpy else variable

    def expected_active_units(self, numpy=False):
        """Expected number of non-zero gates, sum_j P(z_j > 0) (`numpy`: as :meth:`gate_probability`)."""
        xp = gates.NumpyOps if numpy else ops
        return xp.sum(self.gate_probability(numpy))

    def activation_rates(self):
        """a_j = active observations / all observations since the last reset (eq. 6).

        Returns:
            NumPy array with one rate per gated unit, or None if nothing was observed.
        """
        n = float(ops.convert_to_numpy(self.gate_observations))
        if n <= 0 or not self.gate_inputs:
            return None
        return ops.convert_to_numpy(self.gate_active_count) / n

    def reset_gate_stats(self):
        """Resets the per-epoch gate counters."""
        self.gate_active_count.assign(np.zeros(self.gate_active_count.shape, "float32"))
        self.gate_observations.assign(0.0)

    # -------------------------------------------------------- saving
    def save_own_variables(self, store):
        """Saves the weights and, after them, the gate-noise state (so a resumed run goes on exactly)."""
        super().save_own_variables(store)
        store[str(len(self.weights))] = self.seed_generator.state

    def load_own_variables(self, store):
        """Loads what :meth:`save_own_variables` wrote (files without the noise state load too)."""
        n = len(self.weights)
        if len(store.keys()) == n + 1:
            self.seed_generator.state.assign(store[str(n)])
            store = {str(i): store[str(i)] for i in range(n)}
        super().load_own_variables(store)

    # ----------------------------------------------- owned by each layer type
    @property
    def output_units(self):
        """Number of output units (what the next layer's gates sit on)."""
        raise NotImplementedError

    def prunable_weights(self):
        """`{attribute name: (input-unit axis or None, output-unit axis or None)}`.

        Every weight (and counter) whose shape follows the input or the output
        units; the optimizer's slots of a weight are sliced with its axes.
        """
        raise NotImplementedError

    def with_output_units(self, n):
        """Config changes of a copy with `n` output units (e.g. `{"units": n}`)."""
        raise NotImplementedError

    def build_shape(self, n_inputs):
        """The input shape to build a copy with `n_inputs` input units."""
        raise NotImplementedError

    @property
    def preactivation_shape(self):
        """Shape of one example's pre-activation (what DynHP's probe is added to), e.g. `(units,)`."""
        raise NotImplementedError

    def activation_numbers(self, measures_variance=False):
        """Numbers one example keeps in this layer for the backward pass (the full accounting, eq. 14).

        Default (a dense layer): its input a, the gate z and a*z (n_in each) and
        the pre-activation h (n_out); the variance measurement adds a*a and d*d.
        """
        from keras_dynhp import memory

        n_in, n_out = self.gated_units, self.output_units
        numbers = memory.ACTIVATIONS_PER_INPUT * n_in + memory.ACTIVATIONS_PER_OUTPUT * n_out
        if measures_variance:
            numbers += memory.VARIANCE_PER_INPUT * n_in + memory.VARIANCE_PER_OUTPUT * n_out
        return numbers

    def num_params(self):
        """Weights + biases stored by this layer (gate parameters excluded)."""
        raise NotImplementedError

    def params_for(self, n_inputs, n_outputs):
        """Weights + biases with `n_inputs` input and `n_outputs` output units.

        Takes numbers or tensors: with expected unit counts it gives the
        expected size of eq. 11 (:mod:`keras_dynhp.penalty`).
        """
        raise NotImplementedError

    def variance_l1(self, gated_inputs, preact_grad, batch_size):
        """This layer's contribution to ||S||_1 (eq. 8's gradient variance)."""
        raise NotImplementedError

    @classmethod
    def from_plain(cls, layer, **gate_kwargs):
        """The gated form of a built plain Keras layer, its weights carried over.

        Args:
            layer: The plain layer (of the class this type is registered for).
            **gate_kwargs: Gate and penalty settings (e.g. `l0_lambda`,
                `droprate_init`, `penalty`, `seed`).

        Returns:
            The new, built gated layer.
        """
        raise NotImplementedError

    def to_plain(self, keep_inputs, keep_outputs, name):
        """The gate-free plain Keras layer (built, weights set): gates folded, units kept."""
        raise NotImplementedError

    # ------------------------------------------------------------ pruning
    def pruned(self, keep_inputs=None, keep_outputs=None):
        """A new layer of this type with only the given input and output units.

        Every variable is carried over (the gate noise state included, so the
        random stream goes on); those of :meth:`prunable_weights` are sliced.
        The copy is built under the same name scope, so variable paths stay.

        Args:
            keep_inputs: Sorted indices of input units to keep (None: all).
            keep_outputs: Sorted indices of output units to keep (None: all).

        Returns:
            The new, built layer.
        """
        if not self.built:
            raise ValueError(f"Layer '{self.name}' must be built before it can be pruned.")
        sliced = [slice_array(ops.convert_to_numpy(v), *axes, keep_inputs, keep_outputs)
                  for v, axes in zip(self.variables, self.variable_axes())]
        config = self.copy_config()
        if keep_outputs is not None:
            config.update(self.with_output_units(len(keep_outputs)))
        n_inputs = self.gated_units if keep_inputs is None else len(keep_inputs)
        names = [v.name for v in self.variables]
        new = type(self).from_values(config, self.build_shape(n_inputs), list(zip(names, sliced)), self.scope())
        if [v.name for v in new.variables] != names:
            raise RuntimeError(f"Pruned copy of '{self.name}' has a different set of variables.")
        return new

    def scope(self):
        """The name scope the layer's variables were built under (None at the top level)."""
        path = self.log_alpha.path
        return path.rsplit("/", 2)[0] if path.count("/") >= 2 else None

    @classmethod
    def from_values(cls, config, input_shape, values, scope=None):
        """A new built layer from a config, its input shape and its variables' values.

        The weights start from the given values themselves: running the layer's
        initializers at new shapes would cost a compilation each on JAX, for
        nothing. Used by :meth:`pruned` and to put a snapshot back
        (:func:`keras_dynhp.surgery.restore_architecture`).

        Args:
            config: The layer's :meth:`copy_config` (or `get_config()`; output
                units already set).
            input_shape: The shape to build with (:meth:`build_shape`).
            values: `(variable name, array)` pairs in the order of `variables`.
            scope: Name scope to build under (variable paths stay the same).

        Returns:
            The new, built layer.
        """
        new = cls.from_config(config)
        build_with_values(new, input_shape, values, scope,
                          created_in_init=(new.seed_generator.state.name,))
        return new

    def variable_axes(self):
        """`(in_axis, out_axis)` of each of `self.variables`, in order ((None, None): kept whole)."""
        by_id = {}
        for name, axes in self.prunable_weights().items():
            variable = getattr(self, name, None)
            if variable is not None:
                by_id[id(variable)] = axes
        return [by_id.get(id(v), (None, None)) for v in self.variables]
