"""Skip connections between gated layers: `SkipSave` and `SkipAdd` (residual `Add`).

A residual network is a chain with skips: the tensor at one point of the chain
is kept (:class:`SkipSave`) and added back further on (:class:`SkipAdd`),
directly or through shortcut layers (a strided 1x1 `Conv2D` and its
`BatchNormalization` in a ResNet's first block of a stage). Both sit among the
layers between two gated layers (:class:`~keras_dynhp.models.DynHPModel`'s
`connectors`).

An `Add` ties the channels of its two inputs and of its output: removing
channel c means removing it from every producer feeding the sum and from every
consumer reading it. keras_dynhp keeps those *tied* channels whole: the
gated layer reading a gap that holds a `SkipSave` or a `SkipAdd` has no input
gates (`gate_inputs=False`), so hard pruning never removes them, while the
channels inside each residual block (a ResNet block's middle channels, a
MobileNetV2 block's expanded ones, which hold most of the weights) are pruned
as any chain's. The shortcut layers are stored whole and counted in the
network size (`GatedLayer.output_fixed_params`).
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_dynhp")
class SkipSave(keras.layers.Layer):
    """Keeps the tensor at this point for a later :class:`SkipAdd` with the same `key` (identity).

    Args:
        key: Name shared with the `SkipAdd` that adds the tensor back.
        **kwargs: Passed to `keras.layers.Layer`.

    Example:
        >>> tuple(SkipSave("block_1")(keras.ops.ones((1, 3))).shape)
        (1, 3)
    """

    def __init__(self, key, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(key, str) or not key:
            raise ValueError(f"`key` must be a non-empty string; received key={key!r}.")
        self.key = key

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "key": self.key}


@keras.saving.register_keras_serializable(package="keras_dynhp")
class SkipAdd(keras.layers.Layer):
    """Adds the tensor kept by :class:`SkipSave` (`key`), through optional shortcut layers.

    Called on `[current, saved]`; returns `current + shortcut(saved)`.

    Args:
        key: The `SkipSave` key.
        shortcut: Layers applied to the saved tensor first, in order (plain
            Keras layers or their configs; none: the identity).
        **kwargs: Passed to `keras.layers.Layer`.

    Example:
        >>> add = SkipAdd("block_1")
        >>> add([keras.ops.ones((1, 3)), keras.ops.ones((1, 3))]).tolist()  # doctest: +SKIP
        [[2.0, 2.0, 2.0]]
    """

    def __init__(self, key, shortcut=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(key, str) or not key:
            raise ValueError(f"`key` must be a non-empty string; received key={key!r}.")
        self.key = key
        self.shortcut = [keras.saving.deserialize_keras_object(layer) if isinstance(layer, dict) else layer
                         for layer in (shortcut or [])]

    def build(self, input_shape):
        _, shape = input_shape
        for layer in self.shortcut:
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        self.built = True

    def shortcut_shape(self, saved_shape):
        """The shape of the saved tensor after the shortcut layers."""
        shape = tuple(saved_shape)
        for layer in self.shortcut:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def call(self, inputs, training=None):
        current, saved = inputs
        for layer in self.shortcut:
            saved = layer(saved, training=training)
        return ops.add(current, saved)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            return tuple(input_shape[0])
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "key": self.key,
                "shortcut": [keras.saving.serialize_keras_object(layer) for layer in self.shortcut]}
