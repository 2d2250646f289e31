"""`tf.data` input pipelines whose batch size can be recomputed every epoch."""

import numpy as np
import tensorflow as tf


def make_dataset(x, y=None, batch_size=32, shuffle=True, seed=None, prefetch=True,
                 drop_remainder=False):
    """Batches, shuffles (seeded) and prefetches arrays or an unbatched dataset.

    DynHP builds a new pipeline with this helper every time the batch size
    changes.

    Args:
        x: NumPy array of inputs, or an *unbatched* `tf.data.Dataset` of
            `(x, y)` elements (then `y` must be None).
        y: NumPy array of labels, or None.
        batch_size: Positive batch size.
        shuffle: Reshuffle every epoch (iteration).
        seed: Seed of the shuffle; the same seed gives the same order.
        prefetch: Add `prefetch(tf.data.AUTOTUNE)`.
        drop_remainder: Drop the last incomplete batch.

    Returns:
        A batched `tf.data.Dataset`.

    Raises:
        ValueError: On a non-positive batch size or mismatched lengths.

    Example:
        >>> ds = make_dataset(np.zeros((10, 3)), np.zeros(10), batch_size=4, seed=0)
        >>> [int(b[0].shape[0]) for b in ds]
        [4, 4, 2]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer; received {batch_size!r}.")
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError("Pass labels inside the dataset, not as `y`, when `x` is a tf.data.Dataset.")
        ds = x
        n = int(ds.cardinality())
        buffer = n if n > 0 else 10_000
    else:
        x = np.asarray(x)
        if y is not None:
            y = np.asarray(y)
            if len(x) != len(y):
                raise ValueError(f"`x` and `y` have different lengths: {len(x)} and {len(y)}.")
            ds = tf.data.Dataset.from_tensor_slices((x, y))
        else:
            ds = tf.data.Dataset.from_tensor_slices(x)
        buffer = len(x)
    if shuffle:
        ds = ds.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds


def is_batched(dataset, example_rank):
    """Whether a dataset's elements carry a leading batch axis.

    Args:
        dataset: A `tf.data.Dataset` of `(x, y)` or `x` elements.
        example_rank: Rank of one input example (1 for flat vectors).

    Returns:
        True if the inputs have rank `example_rank + 1`.
    """
    spec = dataset.element_spec
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    return len(x_spec.shape) == example_rank + 1
