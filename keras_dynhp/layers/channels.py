"""Per-channel layers with weights between gated layers: BatchNormalization, DepthwiseConv2D.

A layer that acts on each channel alone (a channel's output depends on that
channel only) follows its producer's channels: when hard pruning removes
channel c of a gated layer, the BatchNormalization and depthwise convolution
after it lose their channel c too (their weights along the channel axis, and
the optimizer's slots of those weights alike), before the next gated layer's
inputs. They belong to the producer's pruning group (Torch-Pruning's
DepGraph: one decision, the consumer's gates, for every tied channel).

Each type owns its slicing through a small handler registered for its Keras
class (:func:`register_channel_layer`), as gated layer types register theirs
(:func:`keras_dynhp.layers.register_gated_layer`); the model, surgery, the
size accounting and export work through :func:`sliced_copy`,
:func:`channel_params` and :func:`channel_handler` only.

A channel layer's stored numbers count towards the network size of its
producer's output channels (a BatchNormalization 4 per channel: gamma, beta
and the two moving statistics; a 3x3 depthwise kernel 9, plus its bias), so
the size penalty (eq. 11) and the model budget see what pruning a channel frees.
"""

import keras
import numpy as np
from keras import ops

from keras_dynhp.layers.base import build_with_values

_CHANNEL_REGISTRY = {}


def register_channel_layer(plain_class):
    """Class decorator: registers a :class:`ChannelLayer` handler for a Keras layer class.

    Example:
        >>> channel_handler(keras.layers.BatchNormalization()).__name__
        'BatchNormalizationChannels'
    """

    def decorate(handler):
        if not issubclass(handler, ChannelLayer):
            raise TypeError(f"{handler.__name__} must derive from ChannelLayer to be registered.")
        _CHANNEL_REGISTRY[plain_class] = handler
        return handler

    return decorate


def registered_channel_layers():
    """A copy of the registry: Keras layer class -> :class:`ChannelLayer` handler."""
    return dict(_CHANNEL_REGISTRY)


def channel_handler(layer):
    """The handler of `layer`'s exact class, or None when it is not a registered channel layer."""
    return _CHANNEL_REGISTRY.get(type(layer))


class ChannelLayer:
    """How a per-channel Keras layer type follows its producer's channels (class methods only).

    A handler says which configurations it supports (:meth:`check`), the
    constructor arguments of a copy (:meth:`copy_args`, live objects: Keras's
    `get_config` serialisation would import TensorFlow in a JAX process), the
    channel axis of each variable (:meth:`channel_axes`) and the numbers it
    stores per channel (:meth:`params_per_channel`).
    """

    @classmethod
    def check(cls, layer):
        """Raises a ValueError naming the layer for a configuration that cannot follow channels."""

    @classmethod
    def copy_args(cls, layer):
        """Constructor arguments of a copy of `layer` (name, trainable and dtype policy included)."""
        raise NotImplementedError

    @classmethod
    def channel_axes(cls, layer):
        """Per variable of `layer.variables`, the axis indexed by channels (None: kept whole)."""
        raise NotImplementedError

    @classmethod
    def params_per_channel(cls, layer):
        """Numbers the layer stores per channel (the network-size accounting)."""
        raise NotImplementedError

    @staticmethod
    def base_args(layer):
        return {"name": layer.name, "trainable": layer.trainable, "dtype": layer.dtype_policy}


@register_channel_layer(keras.layers.BatchNormalization)
class BatchNormalizationChannels(ChannelLayer):
    """`keras.layers.BatchNormalization` over the last axis: gamma, beta and both moving statistics."""

    @classmethod
    def check(cls, layer):
        rank = layer.input_spec.ndim if layer.built else None
        if layer.axis not in (-1, None if rank is None else rank - 1):
            raise ValueError(
                f"BatchNormalization '{layer.name}' normalises axis {layer.axis}: keras_dynhp prunes "
                "channels-last networks, whose BatchNormalization has axis=-1.")
        if getattr(layer, "renorm", False):
            raise ValueError(f"BatchNormalization '{layer.name}' uses renorm: keras_dynhp supports it without.")

    @classmethod
    def copy_args(cls, layer):
        return {
            **cls.base_args(layer), "axis": -1, "momentum": layer.momentum, "epsilon": layer.epsilon,
            "center": layer.center, "scale": layer.scale, "beta_initializer": layer.beta_initializer,
            "gamma_initializer": layer.gamma_initializer,
            "moving_mean_initializer": layer.moving_mean_initializer,
            "moving_variance_initializer": layer.moving_variance_initializer,
            "beta_regularizer": layer.beta_regularizer, "gamma_regularizer": layer.gamma_regularizer,
            "beta_constraint": layer.beta_constraint, "gamma_constraint": layer.gamma_constraint,
            "synchronized": getattr(layer, "synchronized", False),
        }

    @classmethod
    def channel_axes(cls, layer):
        return [0] * len(layer.variables)

    @classmethod
    def params_per_channel(cls, layer):
        return len(layer.variables)


@register_channel_layer(keras.layers.DepthwiseConv2D)
class DepthwiseConv2DChannels(ChannelLayer):
    """`keras.layers.DepthwiseConv2D` with `depth_multiplier=1`: each channel's own filter and bias."""

    @classmethod
    def check(cls, layer):
        unsupported = []
        if layer.depth_multiplier != 1:
            unsupported.append(f"depth_multiplier={layer.depth_multiplier}")
        if layer.data_format != "channels_last":
            unsupported.append(f"data_format={layer.data_format!r}")
        if tuple(layer.dilation_rate) != (1, 1):
            unsupported.append(f"dilation_rate={tuple(layer.dilation_rate)}")
        if unsupported:
            raise ValueError(
                f"DepthwiseConv2D '{layer.name}' has {', '.join(unsupported)}: keras_dynhp prunes channels "
                "of channels_last, undilated depthwise convolutions with depth_multiplier=1.")

    @classmethod
    def copy_args(cls, layer):
        return {
            **cls.base_args(layer), "kernel_size": layer.kernel_size, "strides": layer.strides,
            "padding": layer.padding, "depth_multiplier": 1, "data_format": "channels_last",
            "dilation_rate": layer.dilation_rate, "activation": layer.activation, "use_bias": layer.use_bias,
            "depthwise_initializer": layer.depthwise_initializer, "bias_initializer": layer.bias_initializer,
            "depthwise_regularizer": layer.depthwise_regularizer, "bias_regularizer": layer.bias_regularizer,
            "activity_regularizer": layer.activity_regularizer,
            "depthwise_constraint": layer.depthwise_constraint, "bias_constraint": layer.bias_constraint,
        }

    @classmethod
    def channel_axes(cls, layer):
        return [2 if len(v.shape) == 4 else 0 for v in layer.variables]

    @classmethod
    def params_per_channel(cls, layer):
        return int(np.prod(layer.kernel_size)) + (1 if layer.use_bias else 0)


def check_channel_layer(layer):
    """Raises a ValueError for a channel layer whose configuration cannot follow channels."""
    channel_handler(layer).check(layer)


def channel_params(layer):
    """Numbers `layer` stores per channel: 0 for a weight-free layer (pooling, activations)."""
    handler = channel_handler(layer)
    return 0 if handler is None or not layer.built else handler.params_per_channel(layer)


def _scope(layer):
    """The name scope `layer`'s variables were built under (None at the top level)."""
    path = layer.variables[0].path if layer.variables else ""
    return path.rsplit("/", 2)[0] if path.count("/") >= 2 else None


def copy_with_values(layer, channels, values):
    """A built copy of channel layer `layer` with `channels` channels and the given variable values.

    Args:
        layer: A built registered channel layer (the template: its settings).
        channels: The copy's number of channels.
        values: One array per variable of `layer.variables`, shaped for `channels`.

    Returns:
        The new, built layer (same name; its variables under the same scope).
    """
    handler = channel_handler(layer)
    new = type(layer)(**handler.copy_args(layer))
    rank = layer.input_spec.ndim or layer.input_spec.min_ndim
    names = [v.name for v in layer.variables]
    build_with_values(new, (None,) * (rank - 1) + (int(channels),), list(zip(names, values)), _scope(layer))
    return new


def sliced_copy(layer, keep):
    """A built copy of channel layer `layer` with only the `keep` channels (sorted indices).

    Example:
        >>> bn = keras.layers.BatchNormalization()
        >>> bn.build((None, 4, 4, 3))
        >>> [tuple(v.shape) for v in sliced_copy(bn, [0, 2]).variables]
        [(2,), (2,), (2,), (2,)]
    """
    handler = channel_handler(layer)
    keep = np.asarray(keep, dtype="int64")
    values = [np.take(ops.convert_to_numpy(v), keep, axis=axis) if axis is not None else ops.convert_to_numpy(v)
              for v, axis in zip(layer.variables, handler.channel_axes(layer))]
    return copy_with_values(layer, len(keep), values)


def copy_channel_layer(layer):
    """A built copy of a channel layer with the same values (for `prune`: the user's model stays as it was)."""
    values = [ops.convert_to_numpy(v) for v in layer.variables]
    axes = channel_handler(layer).channel_axes(layer)
    channels = next(v.shape[axis] for v, axis in zip(values, axes) if axis is not None)
    return copy_with_values(layer, channels, values)


def channel_slicers(layer, keep):
    """Per variable of `layer`, a function slicing an array of its shape (an optimizer slot) to `keep`."""
    keep = np.asarray(keep, dtype="int64")
    return [None if axis is None else (lambda value, axis=axis: np.take(value, keep, axis=axis))
            for axis in channel_handler(layer).channel_axes(layer)]
