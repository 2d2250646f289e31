"""`L0Conv2D`: a 2-D convolution whose input channels carry hard-concrete L0 gates.

The gate maths is in :mod:`keras_dynhp.layers.gates` (eq. 3-5); this module
holds what is specific to a convolution: a gate multiplies a whole input
feature map (one gate per input channel, broadcast over height and width),
the penalty's weighting (a gate controls `kh * kw * filters` kernel entries),
which kernel axes follow which units, the convolution's exact gradient-variance
term and the conversion to `keras.layers.Conv2D`.

Why gates on the *input* channels (the Louizos reference gates each
convolution's output feature maps): it is the same surgery. Channel c of a
producer's output reaches only the next gated layer, through layers that act
on each channel alone (pooling, activations, dropout), so `z_c` on the
consumer's input c equals `z_c` on the producer's output c; with `z_c = 0`
removing the producer's filter c and the consumer's kernel slice c is exact.
Gating inputs keeps one rule for every layer type (the consumer's gates decide,
:mod:`keras_dynhp.surgery`), lets a dense layer after `Flatten` prune single
features, and leaves the network's output ungated. A first convolution sees
the image channels: build it with `gate_inputs=False` (:func:`~keras_dynhp.models.build_lenet5`
does), so images are never dropped.
"""

import keras
import numpy as np  # noqa: F401  (the docstring examples use it)
from keras import ops

from keras_dynhp.layers.base import GatedLayer, check_positive_int, register_gated_layer, slice_array
from keras_dynhp.layers.gates import DEFAULT_TEMPERATURE, NumpyOps

PADDINGS = ("valid", "same")


def _pair(name, value):
    """`value` as a pair of positive ints (an int means both), or a ValueError naming it."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"`{name}` must be an integer or a pair of integers; received {value!r}.")
        return tuple(check_positive_int(name, v) for v in value)
    v = check_positive_int(name, value)
    return (v, v)


def conv_output_size(size, kernel, stride, padding):
    """Output length of a convolution along one axis (Keras's rule)."""
    if padding == "same":
        return -(-int(size) // int(stride))
    return (int(size) - int(kernel)) // int(stride) + 1


@register_gated_layer(keras.layers.Conv2D)
@keras.saving.register_keras_serializable(package="keras_dynhp")
class L0Conv2D(GatedLayer, keras.layers.Layer):
    """2-D convolution (channels last) whose input channels carry hard-concrete L0 gates.

    `outputs = activation(conv(inputs * z, kernel) + bias)` where `z` holds one
    gate per input channel, the same for every pixel of the feature map. During
    training the gates are sampled (per example by default); at inference the
    deterministic gate is used. The expected-L0 penalty is added as a layer loss
    on every call, and the layer counts how often each gate was non-zero (the
    statistics of hard pruning, paper eq. 6), like :class:`~keras_dynhp.layers.L0Dense`.

    Args:
        filters: Positive integer, number of output channels.
        kernel_size: Integer or pair, the kernel's height and width.
        strides: Integer or pair (default 1).
        padding: "valid" or "same".
        activation: Activation function (name or callable). Default: linear.
        use_bias: Whether the layer has a bias vector.
        droprate_init: Initial drop rate p in (0, 1) of the gates.
        temperature: Concrete temperature beta > 0 (default 2/3).
        l0_lambda: Non-negative L0 strength per weight controlled by a gate.
        weight_decay: Non-negative L2 strength (gated, as in Louizos et al.).
        penalty: "louizos" (the layer adds `l0_lambda * sum_c P(z_c > 0) *
            kh * kw * filters / N`, eq. 5) or "size" (the model adds eq. 11);
            see :mod:`keras_dynhp.penalty`.
        dataset_size: N of the penalty (set by `DynHPModel.fit`). None means 1.
        per_example_gates: One gate vector per example (True) or per batch.
        collect_gate_stats: Count active gate observations while training.
        gate_inputs: False: no gates on the input channels (they are always on
            and never pruned), for a first convolution over image channels.
        kernel_initializer: Initializer for the kernel.
        bias_initializer: Initializer for the bias.
        seed: Optional integer seed of the gate noise.

    Input shape:
        `(batch_size, height, width, channels)`, height and width known.

    Returns:
        A tensor of shape `(batch_size, new_height, new_width, filters)`.

    Example:
        >>> layer = L0Conv2D(4, 3, activation="relu", seed=0)
        >>> y = layer(np.ones((2, 8, 8, 3), "float32"))
        >>> tuple(y.shape)
        (2, 6, 6, 4)
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
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
        self.filters = check_positive_int("filters", filters)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.strides = _pair("strides", strides)
        if padding not in PADDINGS:
            raise ValueError(f"`padding` must be one of {PADDINGS}; received padding={padding!r}.")
        self.padding = padding
        self.set_gate_options(droprate_init, temperature, l0_lambda, weight_decay, penalty, dataset_size,
                              per_example_gates, collect_gate_stats, seed, gate_inputs)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = False
        self.spatial_size = None  # (height, width) of the inputs, known once built

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"L0Conv2D '{self.name}' expects inputs of rank 4 (batch, height, width, channels); "
                f"received input shape {tuple(input_shape)}.")
        if any(d is None for d in input_shape[1:]):
            raise ValueError(
                f"L0Conv2D '{self.name}' needs known height, width and channels; received input shape "
                f"{tuple(input_shape)}.")
        height, width, channels = (int(d) for d in input_shape[1:])
        out_h, out_w = self._output_hw(height, width)
        if out_h <= 0 or out_w <= 0:
            raise ValueError(
                f"L0Conv2D '{self.name}': a {self.kernel_size} kernel does not fit inputs of "
                f"{height}x{width} with padding={self.padding!r}.")
        self.spatial_size = (height, width)
        self.kernel = self.add_weight(
            name="kernel", shape=self.kernel_size + (channels, self.filters),
            initializer=self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
        else:
            self.bias = None
        self.add_gates(channels, self.droprate_init, self.seed)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})

    def _output_hw(self, height, width):
        return tuple(conv_output_size(s, k, st, self.padding)
                     for s, k, st in zip((height, width), self.kernel_size, self.strides))

    @property
    def input_channels(self):
        """Number of gated input channels (None before the layer is built)."""
        return int(self.kernel.shape[2]) if self.built else None

    def gated_inputs(self, inputs, training=False):
        """Returns `inputs * z` (one gate per channel) with sampled or deterministic gates."""
        if not self.gate_inputs:
            return inputs
        if not training or self.deterministic_training:
            return inputs * ops.cast(self.inference_gates(), inputs.dtype)
        z = self.sample_gates(ops.shape(inputs)[0])
        self.record_gate_activity(z)
        if self.per_example_gates:
            z = z[:, None, None, :]
        return inputs * ops.cast(z, inputs.dtype)

    def preactivation(self, gated):
        """`conv(gated, kernel) + bias`."""
        h = ops.conv(gated, self.kernel, strides=self.strides, padding=self.padding)
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
        out_h, out_w = self._output_hw(input_shape[1], input_shape[2])
        return (input_shape[0], out_h, out_w, self.filters)

    @property
    def kernel_area(self):
        """kh * kw: the kernel entries one (input, output) channel pair holds."""
        return self.kernel_size[0] * self.kernel_size[1]

    def l0_penalty(self, numpy=False):
        """Expected-L0 penalty of this layer (eq. 5, weighted per gate by what it controls).

        `R = (1/N) * [sum_c P(z_c>0) * (l0_lambda * kh*kw*filters + weight_decay/2 *
        ||W[:, :, c, :]||^2) + weight_decay/2 * ||b||^2]`. With `penalty="size"`
        the `l0_lambda` term is left to the model (eq. 11); without input gates
        only the weight decay is left. `numpy=True`: a NumPy value, computed
        without the backend (see :meth:`gate_probability`).
        """
        per_gate = (self.l0_lambda * self.kernel_area * self.filters
                    if self.penalty == "louizos" and self.gate_inputs else 0.0)
        xp = NumpyOps if numpy else ops
        if self.weight_decay:
            per_gate = per_gate + 0.5 * self.weight_decay * xp.sum(
                xp.square(self._value(self.kernel, numpy)), axis=(0, 1, 3))
        penalty = xp.sum(self.gate_probability(numpy) * per_gate)
        if self.weight_decay and self.use_bias:
            penalty = penalty + 0.5 * self.weight_decay * xp.sum(xp.square(self._value(self.bias, numpy)))
        return penalty / float(self.dataset_size or 1)

    # --------------------------------------------- the GatedLayer interface
    @property
    def output_units(self):
        return self.filters

    @property
    def preactivation_shape(self):
        return self._output_hw(*self.spatial_size) + (self.filters,)

    def num_params(self):
        """Kernel + bias entries stored by this layer (gate parameters excluded)."""
        return int(self.params_for(self.input_channels, self.filters))

    def params_for(self, n_inputs, n_outputs):
        """`kh*kw * n_inputs * n_outputs` kernel entries + `n_outputs` biases (numbers or tensors)."""
        return self.kernel_area * n_inputs * n_outputs + (n_outputs if self.use_bias else 0)

    def prunable_weights(self):
        """Kernel axis 2 and the gates follow the input channels; kernel axis 3 and bias the outputs."""
        return {
            "kernel": (2, 3),
            "bias": (None, 0),
            "log_alpha": (0, None),
            "gate_active_count": (0, None),
        }

    def with_output_units(self, n):
        return {"filters": int(n)}

    def build_shape(self, n_inputs):
        return (None,) + tuple(self.spatial_size) + (int(n_inputs),)

    def activation_numbers(self, measures_variance=False):
        """Per example: the input a and a*z (H*W*C each), z (C) and the pre-activation h.

        The variance measurement adds what :func:`keras_dynhp.batch_size.conv_variance_l1`
        forms per example: the patches (P*K), and the per-example kernel
        gradient (K*F) or the two P x P Gram matrices, whichever is smaller.
        """
        height, width = self.spatial_size
        c_in = self.input_channels
        out_h, out_w = self._output_hw(height, width)
        positions = out_h * out_w
        numbers = 2 * height * width * c_in + c_in + positions * self.filters
        if measures_variance:
            k = self.kernel_area * c_in
            numbers += positions * k + min(k * self.filters, 2 * positions * positions)
        return numbers

    def variance_l1(self, gated_inputs, preact_grad, batch_size):
        """sum(S_W) + sum(S_b) of this convolution, exactly (see `batch_size.conv_variance_l1`)."""
        from keras_dynhp.batch_size import conv_variance_l1

        patches = ops.image.extract_patches(
            gated_inputs, self.kernel_size, strides=self.strides, padding=self.padding,
            data_format="channels_last")
        k = self.kernel_area * self.input_channels
        patches = ops.reshape(patches, (-1, patches.shape[1] * patches.shape[2], k))
        d = ops.reshape(preact_grad, (-1, preact_grad.shape[1] * preact_grad.shape[2], self.filters))
        return conv_variance_l1(patches, d, batch_size)

    @classmethod
    def from_plain(cls, layer, **gate_kwargs):
        """An `L0Conv2D` from a built `keras.layers.Conv2D`: same filters, kernel, strides, padding.

        Example:
            >>> conv = keras.layers.Conv2D(4, 3, activation="relu")
            >>> conv.build((None, 8, 8, 2))
            >>> gated = L0Conv2D.from_plain(conv, l0_lambda=0.1)
            >>> gated.input_channels, gated.filters, gated.kernel_size
            (2, 4, (3, 3))
        """
        if not layer.built:
            raise ValueError(f"Layer '{layer.name}' must be built before it can be gated.")
        unsupported = []
        if layer.data_format != "channels_last":
            unsupported.append(f"data_format={layer.data_format!r}")
        if tuple(layer.dilation_rate) != (1, 1):
            unsupported.append(f"dilation_rate={tuple(layer.dilation_rate)}")
        if getattr(layer, "groups", 1) != 1:
            unsupported.append(f"groups={layer.groups}")
        if layer.padding not in PADDINGS:
            unsupported.append(f"padding={layer.padding!r}")
        if unsupported:
            raise ValueError(
                f"Conv2D '{layer.name}' has {', '.join(unsupported)}: L0Conv2D supports channels_last, "
                "undilated, ungrouped convolutions with 'valid' or 'same' padding.")
        shapes = getattr(layer, "_build_shapes_dict", None) or {}
        shape = next(iter(shapes.values()), None) if shapes else None
        if shape is None:
            try:
                shape = tuple(layer.input.shape)
            except (AttributeError, ValueError):
                shape = None
        if shape is None or len(shape) != 4 or any(d is None for d in shape[1:3]):
            raise ValueError(f"Conv2D '{layer.name}' must be built on inputs of known height and width.")
        gated = cls(layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
                    activation=layer.activation, use_bias=layer.use_bias, name=f"l0_{layer.name}",
                    **gate_kwargs)
        gated.build(tuple(shape))
        gated.kernel.assign(ops.convert_to_numpy(layer.kernel))
        if layer.use_bias:
            gated.bias.assign(ops.convert_to_numpy(layer.bias))
        return gated

    def to_plain(self, keep_inputs, keep_outputs, name):
        """A `keras.layers.Conv2D` with the inference gates folded into the kernel.

        `W'[:, :, c, :] = z_c * W[:, :, c, :]` (exact with zero padding, as
        `z_c * 0 = 0`), then only the kept input and output channels.
        """
        kernel = ops.convert_to_numpy(self.kernel) * ops.convert_to_numpy(
            self.inference_gates())[None, None, :, None]
        bias = ops.convert_to_numpy(self.bias) if self.use_bias else None
        kernel = slice_array(kernel, 2, 3, keep_inputs, keep_outputs)
        if bias is not None:
            bias = slice_array(bias, None, 0, None, keep_outputs)
        conv = keras.layers.Conv2D(kernel.shape[3], self.kernel_size, strides=self.strides,
                                   padding=self.padding, activation=self.activation,
                                   use_bias=bias is not None, name=name)
        conv.build((None,) + tuple(self.spatial_size) + (kernel.shape[2],))
        conv.set_weights([kernel] + ([bias] if bias is not None else []))
        return conv

    # -------------------------------------------------------- serialisation
    def get_build_config(self):
        if not self.built:
            return None
        return {"input_shape": (None,) + tuple(self.spatial_size) + (self.input_channels,)}

    def own_config(self):
        return {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
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

