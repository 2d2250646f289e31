"""Hard-concrete L0 gates and the gated dense layer.

This module holds the maths of the gates (Concepts page "Hard-concrete gate", paper
eq. 3-5, Louizos et al. 2018) and the two layers built on it:

* :class:`L0Dense`: a dense layer whose *input units* carry one hard-concrete
  gate each.
* :class:`FeatureSelect`: a fixed gather in front of the first gated layer, so a
  model whose input pixels were hard-pruned still accepts the full-width input.

The gate maths (one obvious place, equation numbers from the paper):

* sample (training), eq. 3-4::

      u ~ U(eps, 1 - eps)
      s = sigmoid((log u - log(1 - u) + log_alpha) / beta)
      z = clip(s * (zeta - gamma) + gamma, 0, 1)

* deterministic gate (inference)::

      z = clip(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)

* probability of a non-zero gate, eq. 4::

      P(z > 0) = 1 - Q(0) = sigmoid(log_alpha - beta * log(-gamma / zeta))

* penalty added to the mean data loss, eq. 5 with the Louizos reference's
  weighting (see :meth:`L0Dense.l0_penalty`)::

      R = (1 / N) * sum_j P(z_j > 0) * (l0_lambda * units + weight_decay / 2 * ||W_j||^2)
          + (1 / N) * weight_decay / 2 * ||b||^2
"""

import math

import keras
import numpy as np
from keras import ops

# Hard-concrete constants (Louizos et al. 2018).
LIMIT_LOW = -0.1  # gamma (stretch lower limit)
LIMIT_HIGH = 1.1  # zeta (stretch upper limit)
EPSILON = 1e-6
DEFAULT_TEMPERATURE = 2.0 / 3.0
# log_alpha is clamped to [log(1e-2), log(1e2)] as in the Louizos reference.
LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))


def hard_concrete_sample(log_alpha, u, temperature=DEFAULT_TEMPERATURE):
    """Draws hard-concrete gates from uniform noise (paper eq. 3-4).

    Args:
        log_alpha: Gate location parameters, broadcastable against `u`.
        u: Uniform noise in (eps, 1 - eps).
        temperature: The concrete temperature beta.

    Returns:
        Gates `z` in [0, 1], exactly 0 or 1 with positive probability.
    """
    s = ops.sigmoid((ops.log(u) - ops.log(1.0 - u) + log_alpha) / temperature)
    return ops.clip(s * (LIMIT_HIGH - LIMIT_LOW) + LIMIT_LOW, 0.0, 1.0)


def deterministic_gate(log_alpha):
    """Inference-time gate: clip(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)."""
    return ops.clip(
        ops.sigmoid(log_alpha) * (LIMIT_HIGH - LIMIT_LOW) + LIMIT_LOW, 0.0, 1.0
    )


def gate_probability(log_alpha, temperature=DEFAULT_TEMPERATURE):
    """P(z > 0) = 1 - Q(0) = sigmoid(log_alpha - beta * log(-gamma / zeta)) (eq. 4)."""
    shift = temperature * math.log(-LIMIT_LOW / LIMIT_HIGH)
    return ops.sigmoid(log_alpha - shift)


@keras.saving.register_keras_serializable(package="keras_dynhp")
class ClipLogAlpha(keras.constraints.Constraint):
    """Clamps gate parameters to a safe range after every optimizer step.

    Args:
        min_value: Lower bound of `log_alpha`.
        max_value: Upper bound of `log_alpha`.
    """

    def __init__(self, min_value=LOG_ALPHA_RANGE[0], max_value=LOG_ALPHA_RANGE[1]):
        self.min_value = float(min_value)
        self.max_value = float(max_value)

    def __call__(self, w):
        return ops.clip(w, self.min_value, self.max_value)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer; received {name}={value!r}.")
    return int(value)


@keras.saving.register_keras_serializable(package="keras_dynhp")
class L0Dense(keras.layers.Layer):
    """Dense layer whose input units carry hard-concrete L0 gates.

    `outputs = activation((inputs * z) @ kernel + bias)` where `z` holds one gate
    per input unit. During training the gates are sampled (per example by
    default, "at each input pattern in the mini-batch"); at inference the
    deterministic gate is used. The expected-L0 penalty is added as a layer loss
    on every call, and, while training, the layer counts how often each gate was
    non-zero (the statistics of hard pruning, paper eq. 6).

    Args:
        units: Positive integer, number of output units.
        activation: Activation function (name or callable). Default: linear.
        use_bias: Whether the layer has a bias vector.
        droprate_init: Initial drop rate p in (0, 1); `log_alpha` starts at
            log(1 - p) - log(p) plus N(0, 0.01) noise.
        temperature: Concrete temperature beta > 0 (default 2/3).
        l0_lambda: Non-negative L0 strength per weight controlled by a gate.
        weight_decay: Non-negative L2 strength (gated, as in Louizos et al.).
        dataset_size: N, the number of training examples the penalty is divided
            by (set automatically by `DynHPModel.fit`). `None` means 1.
        per_example_gates: Sample one gate vector per example (True) or one per
            batch (False).
        collect_gate_stats: Count active gate observations while training.
        kernel_initializer: Initializer for the kernel.
        bias_initializer: Initializer for the bias.
        seed: Optional integer seed of the gate noise.

    Input shape:
        `(batch_size, input_dim)`.

    Returns:
        A tensor of shape `(batch_size, units)`.

    Example:
        >>> layer = L0Dense(4, activation="relu", seed=0)
        >>> y = layer(np.ones((2, 3), "float32"))
        >>> tuple(y.shape)
        (2, 4)
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        droprate_init=0.5,
        temperature=DEFAULT_TEMPERATURE,
        l0_lambda=0.01,
        weight_decay=0.0,
        dataset_size=None,
        per_example_gates=True,
        collect_gate_stats=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _check_positive_int("units", units)
        if not (0.0 < float(droprate_init) < 1.0):
            raise ValueError(
                f"`droprate_init` must be in the open interval (0, 1); "
                f"received droprate_init={droprate_init!r}."
            )
        if not float(temperature) > 0.0:
            raise ValueError(f"`temperature` must be > 0; received temperature={temperature!r}.")
        if not float(l0_lambda) >= 0.0:
            raise ValueError(f"`l0_lambda` must be >= 0; received l0_lambda={l0_lambda!r}.")
        if not float(weight_decay) >= 0.0:
            raise ValueError(
                f"`weight_decay` must be >= 0; received weight_decay={weight_decay!r}."
            )
        if dataset_size is not None:
            dataset_size = _check_positive_int("dataset_size", dataset_size)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.droprate_init = float(droprate_init)
        self.temperature = float(temperature)
        self.l0_lambda = float(l0_lambda)
        self.weight_decay = float(weight_decay)
        self.dataset_size = dataset_size
        self.per_example_gates = bool(per_example_gates)
        self.collect_gate_stats = bool(collect_gate_stats)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                f"L0Dense '{self.name}' expects inputs of rank 2 (batch, features); "
                f"received input shape {tuple(input_shape)}."
            )
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"L0Dense '{self.name}' needs a known input width; received input "
                f"shape {tuple(input_shape)}."
            )
        self._create_weights(int(input_dim))
        self.input_spec = keras.layers.InputSpec(ndim=2, axes={-1: int(input_dim)})

    def _create_weights(self, input_dim):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_dim, self.units),
            initializer=self.kernel_initializer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,), initializer=self.bias_initializer
            )
        else:
            self.bias = None
        mean = math.log(1.0 - self.droprate_init) - math.log(self.droprate_init)
        self.log_alpha = self.add_weight(
            name="log_alpha",
            shape=(input_dim,),
            initializer=keras.initializers.RandomNormal(mean=mean, stddev=1e-2, seed=self.seed),
            constraint=ClipLogAlpha(),
        )
        self.gate_active_count = self.add_weight(
            name="gate_active_count",
            shape=(input_dim,),
            initializer="zeros",
            trainable=False,
        )
        self.gate_observations = self.add_weight(
            name="gate_observations", shape=(), initializer="zeros", trainable=False
        )

    @property
    def input_dim(self):
        """Number of gated input units (None before the layer is built)."""
        return int(self.kernel.shape[0]) if self.built else None

    # ------------------------------------------------------------------- call
    def sample_gates(self, batch_size):
        """Samples training gates, shape (batch, in) or (in,) (eq. 3-4)."""
        shape = (batch_size, self.input_dim) if self.per_example_gates else (self.input_dim,)
        u = keras.random.uniform(
            shape, minval=EPSILON, maxval=1.0 - EPSILON, seed=self.seed_generator
        )
        return hard_concrete_sample(self.log_alpha, u, self.temperature)

    def gated_inputs(self, inputs, training=False):
        """Returns `inputs * z` with sampled (training) or deterministic gates."""
        if not training:
            return inputs * ops.cast(deterministic_gate(self.log_alpha), inputs.dtype)
        z = self.sample_gates(ops.shape(inputs)[0])
        if self.collect_gate_stats:
            active = ops.cast(z > 0.0, "float32")
            if self.per_example_gates:
                self.gate_active_count.assign_add(ops.sum(active, axis=0))
                self.gate_observations.assign_add(ops.cast(ops.shape(inputs)[0], "float32"))
            else:
                self.gate_active_count.assign_add(active)
                self.gate_observations.assign_add(1.0)
        return inputs * ops.cast(z, inputs.dtype)

    def preactivation(self, gated):
        """`gated @ kernel + bias`."""
        h = ops.matmul(gated, self.kernel)
        if self.use_bias:
            h = ops.add(h, self.bias)
        return h

    def call(self, inputs, training=None, return_cache=False):
        gated = self.gated_inputs(inputs, training=bool(training))
        h = self.preactivation(gated)
        outputs = self.activation(h) if self.activation is not None else h
        self.add_loss(self.l0_penalty())
        if return_cache:
            return outputs, (gated, h)
        return outputs

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    # ----------------------------------------------------------- statistics
    def gate_probability(self):
        """P(z_j > 0) for each input unit (eq. 4)."""
        return gate_probability(self.log_alpha, self.temperature)

    def inference_gates(self):
        """The deterministic gates used at inference."""
        return deterministic_gate(self.log_alpha)

    def expected_active_units(self):
        """Expected number of non-zero gates, sum_j P(z_j > 0)."""
        return ops.sum(self.gate_probability())

    def l0_penalty(self):
        """Expected-L0 penalty of this layer, added to the mean data loss (eq. 5).

        `R = (1/N) * [sum_j P(z_j>0) * (l0_lambda * units + weight_decay/2 * ||W_j||^2)
        + weight_decay/2 * ||b||^2]`, N = `dataset_size` (1 if unset). Gate j
        controls the `units` weights of row j of the kernel.
        """
        per_gate = self.l0_lambda * self.units
        if self.weight_decay:
            per_gate = per_gate + 0.5 * self.weight_decay * ops.sum(
                ops.square(self.kernel), axis=1
            )
        penalty = ops.sum(self.gate_probability() * per_gate)
        if self.weight_decay and self.use_bias:
            penalty = penalty + 0.5 * self.weight_decay * ops.sum(ops.square(self.bias))
        return penalty / float(self.dataset_size or 1)

    def activation_rates(self):
        """a_j = active observations / all observations since the last reset (eq. 6).

        Returns:
            NumPy array of shape (input_dim,), or None if nothing was observed.
        """
        n = float(ops.convert_to_numpy(self.gate_observations))
        if n <= 0:
            return None
        return ops.convert_to_numpy(self.gate_active_count) / n

    def reset_gate_stats(self):
        """Resets the per-epoch gate counters."""
        self.gate_active_count.assign(ops.zeros_like(self.gate_active_count))
        self.gate_observations.assign(0.0)

    def num_params(self):
        """Weights + biases stored by this layer (gate parameters excluded)."""
        n = int(np.prod(self.kernel.shape))
        return n + (self.units if self.use_bias else 0)

    # ------------------------------------------------------------- surgery
    def resize(self, keep_inputs=None, keep_units=None):
        """Rebuilds the weights in place, keeping the given input rows and units.

        Used by :mod:`keras_dynhp.surgery`; slices kernel rows/columns, bias,
        `log_alpha` and the gate counters. New variable objects are created (their
        shapes change); paths and names stay the same.

        Args:
            keep_inputs: Sorted integer indices of input units to keep, or None.
            keep_units: Sorted integer indices of output units to keep, or None.
        """
        if not self.built:
            raise ValueError(f"L0Dense '{self.name}' must be built before it can be resized.")
        kernel = ops.convert_to_numpy(self.kernel)
        log_alpha = ops.convert_to_numpy(self.log_alpha)
        counts = ops.convert_to_numpy(self.gate_active_count)
        observations = ops.convert_to_numpy(self.gate_observations)
        bias = ops.convert_to_numpy(self.bias) if self.use_bias else None
        if keep_inputs is not None:
            kernel, log_alpha, counts = kernel[keep_inputs], log_alpha[keep_inputs], counts[keep_inputs]
        if keep_units is not None:
            kernel = kernel[:, keep_units]
            if bias is not None:
                bias = bias[keep_units]
            self.units = int(len(keep_units))
        # Recreate the variables under the same name scope, so their paths (and
        # the names of the optimizer slots derived from them) do not change.
        parent = self.kernel.path.rsplit("/", 2)[0] if self.kernel.path.count("/") >= 2 else None
        self._tracker.unlock()
        for name in ("kernel", "bias", "log_alpha", "gate_active_count", "gate_observations"):
            variable = getattr(self, name, None)
            if variable is not None:
                # Keras's own `__delattr__` runs gc.collect() per variable (~0.1 s each).
                self._untrack_variable(variable)
                object.__delattr__(self, name)
        if parent:
            with keras.name_scope(parent):
                self._create_weights(int(kernel.shape[0]))
        else:
            self._create_weights(int(kernel.shape[0]))
        self._tracker.lock()
        self.kernel.assign(kernel)
        if bias is not None:
            self.bias.assign(bias)
        self.log_alpha.assign(log_alpha)
        self.gate_active_count.assign(counts)
        self.gate_observations.assign(observations)
        self.input_spec = keras.layers.InputSpec(ndim=2, axes={-1: int(kernel.shape[0])})

    # -------------------------------------------------------- serialisation
    def get_build_config(self):
        # The current (possibly pruned) width, not the width first built with.
        if not self.built:
            return None
        return {"input_shape": (None, self.input_dim)}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "droprate_init": self.droprate_init,
                "temperature": self.temperature,
                "l0_lambda": self.l0_lambda,
                "weight_decay": self.weight_decay,
                "dataset_size": self.dataset_size,
                "per_example_gates": self.per_example_gates,
                "collect_gate_stats": self.collect_gate_stats,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_dynhp")
class FeatureSelect(keras.layers.Layer):
    """Selects a fixed subset of input features (a gather along the last axis).

    Placed in front of the first gated layer once input pixels were pruned, so
    the model keeps accepting the full-width input.

    Args:
        input_dim: Width of the full input.
        indices: Sorted feature indices to keep, or None for all of them.

    Returns:
        A tensor of shape `(batch, len(indices))`.

    Example:
        >>> sel = FeatureSelect(input_dim=4, indices=[0, 2])
        >>> np.asarray(sel(np.arange(8, dtype="float32").reshape(2, 4))).tolist()
        [[0.0, 2.0], [4.0, 6.0]]
    """

    def __init__(self, input_dim, indices=None, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = _check_positive_int("input_dim", input_dim)
        self.set_indices(indices)

    def set_indices(self, indices):
        """Sets the kept feature indices (None: keep all)."""
        if indices is not None:
            indices = [int(i) for i in indices]
            if len(indices) == self.input_dim and indices == list(range(self.input_dim)):
                indices = None
            elif not indices or min(indices) < 0 or max(indices) >= self.input_dim:
                raise ValueError(
                    f"`indices` must be a non-empty list of feature indices in "
                    f"[0, {self.input_dim}); received {len(indices)} indices."
                )
        self.indices = indices

    @property
    def output_dim(self):
        return self.input_dim if self.indices is None else len(self.indices)

    def call(self, inputs):
        if self.indices is None:
            return inputs
        return ops.take(inputs, np.asarray(self.indices, dtype="int32"), axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update({"input_dim": self.input_dim, "indices": self.indices})
        return config
