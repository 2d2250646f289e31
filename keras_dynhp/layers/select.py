"""`FeatureSelect`: a fixed gather in front of the first gated layer.

Once input pixels were hard-pruned, the model keeps accepting the full-width
input by selecting the surviving features with this layer.
"""

import keras
import numpy as np
from keras import ops

from keras_dynhp.layers.base import check_positive_int


def narrower_flat_map(flat, channels, kept_channels):
    """Positions in a flattened channels-last map renumbered for a map of fewer channels.

    Keras flattens `(H, W, C)` as `f = p * C + c` (p the pixel, c the channel).
    When only `kept_channels` of the C remain, the map is `P * len(kept_channels)`
    wide and the feature of pixel p, channel c sits at `p * len(kept) + rank(c)`.

    Args:
        flat: Positions `p * C + c` to keep (sorted); their channels must be in `kept_channels`.
        channels: C.
        kept_channels: Sorted channel indices that remain.

    Returns:
        The renumbered positions (sorted, as the order is kept).

    Example:
        >>> narrower_flat_map([0, 2, 5], channels=3, kept_channels=[0, 2]).tolist()
        [0, 1, 3]
    """
    positions, channel = np.divmod(np.asarray(flat, dtype="int64"), int(channels))
    kept_channels = np.asarray(kept_channels)
    return positions * len(kept_channels) + np.searchsorted(kept_channels, channel)


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
        self.input_dim = check_positive_int("input_dim", input_dim)
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
