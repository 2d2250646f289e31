"""`L0Dense`: a dense layer whose input units carry hard-concrete L0 gates.

The gate maths is in :mod:`keras_dynhp.layers.gates` (eq. 3-5); this module
holds what is specific to a dense layer: the penalty's weighting (a gate
controls one kernel row), which weight axes follow which units, the dense
gradient-variance term and the conversion to `keras.layers.Dense`.
"""

import keras
import numpy as np  # noqa: F401  (the docstring examples use it)
from keras import ops

from keras_dynhp.layers.base import GatedLayer, check_positive_int, register_gated_layer, slice_array
from keras_dynhp.layers.gates import DEFAULT_TEMPERATURE, NumpyOps


@register_gated_layer(keras.layers.Dense)
@keras.saving.register_keras_serializable(package="keras_dynhp")
class L0Dense(GatedLayer, keras.layers.Layer):
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
        penalty: Weighting of the L0 term: "louizos" (the layer adds
            `l0_lambda * sum_j P(z_j > 0) * units / N`, eq. 5, the paper's
            setting) or "size" (the model adds the expected-size penalty of
            eq. 11, which needs the next layer's gates; this layer then adds
            only its weight decay). See :mod:`keras_dynhp.penalty`.
        dataset_size: N, the number of training examples the penalty is divided
            by (set automatically by `DynHPModel.fit`). `None` means 1.
        per_example_gates: Sample one gate vector per example (True) or one per
            batch (False).
        collect_gate_stats: Count active gate observations while training.
        gate_inputs: False: no gates on the input units (always on, never
            pruned), e.g. features tied by a residual connection
            (:mod:`keras_dynhp.layers.skip`).
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
        penalty="louizos",
        dataset_size=None,
        per_example_gates=True,
        collect_gate_stats=True,
        gate_inputs=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.set_gate_options(droprate_init, temperature, l0_lambda, weight_decay, penalty, dataset_size,
                              per_example_gates, collect_gate_stats, seed, gate_inputs)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
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
        self.add_gates(input_dim, self.droprate_init, self.seed)

    @property
    def input_dim(self):
        """Number of gated input units (None before the layer is built)."""
        return int(self.kernel.shape[0]) if self.built else None

    def gated_inputs(self, inputs, training=False):
        """Returns `inputs * z` with sampled (training) or deterministic gates.

        With `deterministic_training` set, training uses the deterministic gates
        too (and counts no gate statistics).
        """
        if not self.gate_inputs:
            return inputs
        if not training or self.deterministic_training:
            return inputs * ops.cast(self.inference_gates(), inputs.dtype)
        z = self.sample_gates(ops.shape(inputs)[0])
        self.record_gate_activity(z)
        return inputs * ops.cast(z, inputs.dtype)

    def preactivation(self, gated):
        """`gated @ kernel + bias`."""
        h = ops.matmul(gated, self.kernel)
        if self.use_bias:
            h = ops.add(h, self.bias)
        return h

    def call(self, inputs, training=None, probe=None):
        gated = self.gated_inputs(inputs, training=bool(training))
        h = self.preactivation(gated)
        if probe is not None:  # a zero tensor: d loss / d probe = d loss / d h (keras_dynhp.backend)
            h = h + probe
        outputs = self.activation(h) if self.activation is not None else h
        self.add_loss(self.l0_penalty())
        if probe is not None:
            return outputs, gated
        return outputs

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def l0_penalty(self, numpy=False):
        """Expected-L0 penalty of this layer, added to the mean data loss (eq. 5).

        `R = (1/N) * [sum_j P(z_j>0) * (l0_lambda * units + weight_decay/2 * ||W_j||^2)
        + weight_decay/2 * ||b||^2]`, N = `dataset_size` (1 if unset). Gate j
        controls the `units` weights of row j of the kernel. With
        `penalty="size"` the `l0_lambda` term is left to the model (eq. 11).
        """
        per_gate = self.l0_lambda * self.units if self.penalty == "louizos" and self.gate_inputs else 0.0
        xp = NumpyOps if numpy else ops
        if self.weight_decay:
            per_gate = per_gate + 0.5 * self.weight_decay * xp.sum(
                xp.square(self._value(self.kernel, numpy)), axis=1
            )
        penalty = xp.sum(self.gate_probability(numpy) * per_gate)
        if self.weight_decay and self.use_bias:
            penalty = penalty + 0.5 * self.weight_decay * xp.sum(xp.square(self._value(self.bias, numpy)))
        return penalty / float(self.dataset_size or 1)

    # --------------------------------------------- the GatedLayer interface
    @property
    def output_units(self):
        return self.units

    @property
    def preactivation_shape(self):
        return (self.units,)

    def num_params(self):
        """Weights + biases stored by this layer (gate parameters excluded)."""
        return int(self.params_for(self.input_dim, self.units))

    def params_for(self, n_inputs, n_outputs):
        """Kernel + bias entries with `n_inputs` inputs and `n_outputs` outputs (numbers or tensors)."""
        return n_inputs * n_outputs + (n_outputs if self.use_bias else 0)

    def prunable_weights(self):
        """Kernel rows and gates follow the input units; kernel columns and bias the outputs."""
        return {
            "kernel": (0, 1),
            "bias": (None, 0),
            "log_alpha": (0, None),
            "gate_active_count": (0, None),
        }

    def with_output_units(self, n):
        return {"units": int(n)}

    def build_shape(self, n_inputs):
        return (None, int(n_inputs))

    def variance_l1(self, gated_inputs, preact_grad, batch_size):
        """sum(S_W) + sum(S_b) of this dense layer (see `batch_size.dense_variance_l1`)."""
        from keras_dynhp.batch_size import dense_variance_l1

        return dense_variance_l1(gated_inputs, preact_grad, batch_size)

    @classmethod
    def from_plain(cls, layer, **gate_kwargs):
        """An `L0Dense` from a built `keras.layers.Dense`: same units, activation, kernel and bias.

        Example:
            >>> dense = keras.layers.Dense(3, activation="relu")
            >>> dense.build((None, 5))
            >>> gated = L0Dense.from_plain(dense, l0_lambda=0.1)
            >>> gated.input_dim, gated.units, gated.activation is dense.activation
            (5, 3, True)
        """
        if not layer.built:
            raise ValueError(f"Layer '{layer.name}' must be built before it can be gated.")
        gated = cls(layer.units, activation=layer.activation, use_bias=layer.use_bias,
                    name=f"l0_{layer.name}", **gate_kwargs)
        gated.build((None, int(layer.kernel.shape[0])))
        gated.kernel.assign(ops.convert_to_numpy(layer.kernel))
        if layer.use_bias:
            gated.bias.assign(ops.convert_to_numpy(layer.bias))
        return gated

    def to_plain(self, keep_inputs, keep_outputs, name):
        """A `keras.layers.Dense` with the inference gates folded into the kernel rows.

        `W'_j = z_j * W_j` (row j scaled by gate j), then only the kept input rows
        and output columns.
        """
        kernel = ops.convert_to_numpy(self.kernel) * ops.convert_to_numpy(self.inference_gates())[:, None]
        bias = ops.convert_to_numpy(self.bias) if self.use_bias else None
        kernel = slice_array(kernel, 0, 1, keep_inputs, keep_outputs)
        if bias is not None:
            bias = slice_array(bias, None, 0, None, keep_outputs)
        dense = keras.layers.Dense(kernel.shape[1], activation=self.activation,
                                   use_bias=bias is not None, name=name)
        dense.build((None, kernel.shape[0]))
        dense.set_weights([kernel] + ([bias] if bias is not None else []))
        return dense

    # -------------------------------------------------------- serialisation
    def get_build_config(self):
        # The current (possibly pruned) width, not the width first built with.
        if not self.built:
            return None
        return {"input_shape": (None, self.input_dim)}

    def own_config(self):
        return {
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            **self.gate_config(),
            "gate_inputs": self.gate_inputs,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            "seed": self.seed,
        }

    def get_config(self):
        config = super().get_config()
        config.update(self.serialize_own_config())
        return config


