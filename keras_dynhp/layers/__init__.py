"""Gated layers: hard-concrete gate maths, the `GatedLayer` interface and registry, layer types.

Modules: :mod:`~keras_dynhp.layers.gates` (eq. 3-5),
:mod:`~keras_dynhp.layers.base` (the interface every gated layer type implements,
and the registry), :mod:`~keras_dynhp.layers.dense` (:class:`L0Dense`),
:mod:`~keras_dynhp.layers.conv` (:class:`L0Conv2D`),
:mod:`~keras_dynhp.layers.select` (:class:`FeatureSelect`),
:mod:`~keras_dynhp.layers.channels` (per-channel layers with weights that
follow their producer's channels: BatchNormalization, DepthwiseConv2D).
"""

from keras_dynhp.layers.base import (
    GatedLayer,
    register_gated_layer,
    registered_gated_layers,
    slice_array,
)
from keras_dynhp.layers.channels import (
    ChannelLayer,
    register_channel_layer,
    registered_channel_layers,
)
from keras_dynhp.layers.conv import L0Conv2D
from keras_dynhp.layers.dense import L0Dense
from keras_dynhp.layers.gates import (
    DEFAULT_TEMPERATURE,
    EPSILON,
    LIMIT_HIGH,
    LIMIT_LOW,
    LOG_ALPHA_RANGE,
    ClipLogAlpha,
    deterministic_gate,
    gate_probability,
    hard_concrete_sample,
    uniform_noise,
)
from keras_dynhp.layers.select import FeatureSelect

__all__ = [
    "DEFAULT_TEMPERATURE",
    "EPSILON",
    "LIMIT_HIGH",
    "LIMIT_LOW",
    "LOG_ALPHA_RANGE",
    "ChannelLayer",
    "ClipLogAlpha",
    "FeatureSelect",
    "GatedLayer",
    "L0Conv2D",
    "L0Dense",
    "deterministic_gate",
    "gate_probability",
    "hard_concrete_sample",
    "register_channel_layer",
    "register_gated_layer",
    "registered_channel_layers",
    "registered_gated_layers",
    "slice_array",
    "uniform_noise",
]
