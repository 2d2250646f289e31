"""`tf.data` input pipelines whose batch size can be recomputed every epoch."""

import math

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


def is_dataset(x):
    """Whether `x` is a `tf.data.Dataset`."""
    return isinstance(x, tf.data.Dataset)


def check_inputs(x, input_dim, name="x"):
    """`x` as a NumPy array of shape (n, input_dim), or a ValueError naming `name`."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != input_dim:
        raise ValueError(f"`{name}` must have shape (n, {input_dim}); received shape {x.shape}.")
    return x


class EpochPipeline:
    """The training data of one `fit`, batched anew whenever the batch size changes.

    Args:
        x: NumPy inputs (n, input_dim) or a `tf.data.Dataset` of `(x, y)`
            elements, batched or not.
        y: NumPy labels (None when `x` is a dataset).
        input_dim: Width of one input example.
        rebatch: The batch size changes between epochs (DynHP): a dataset must
            then be unbatched.
        shuffle: Shuffle (seeded) every epoch.
        seed: Seed of the shuffle.

    Attributes:
        n: Number of training examples (the N of the L0 penalty, eq. 5).

    Shuffling: a pipeline (re)built at epoch e is seeded with `seed + e`; a
    pipeline kept across epochs reshuffles at every pass. So every epoch sees a
    fresh order, also when DynHP rebuilds the pipeline for a new batch size
    (with `seed` alone, each rebuild would replay the previous first order).
    """

    def __init__(self, x, y, input_dim, rebatch=False, shuffle=True, seed=None):
        self._fixed = None
        if is_dataset(x):
            if y is not None:
                raise ValueError("Pass labels inside the dataset, not as `y`, when `x` is a tf.data.Dataset.")
            batched = is_batched(x, example_rank=1)
            if batched and rebatch:
                raise ValueError(
                    'mode="dynhp" needs an *unbatched* tf.data.Dataset: DynHP re-batches the '
                    "data every epoch at a new batch size. Call `dataset.unbatch()` or pass "
                    "the dataset before `.batch()`."
                )
            self.n = count_examples(x, batched)
            if batched:
                card = int(x.cardinality())
                self._fixed, self._steps = x, (card if card > 0 else None)
                return
            if int(x.cardinality()) < 0:  # now known: tell Keras (no "ran out of data")
                x = x.apply(tf.data.experimental.assert_cardinality(self.n))
            self._x, self._y = x, None
        else:
            if x is None or y is None:
                raise ValueError("`fit` needs `x` and `y` arrays, or a tf.data.Dataset as `x`.")
            x = check_inputs(x, input_dim).astype("float32", copy=False)
            y = np.asarray(y)
            if len(y) != len(x):
                raise ValueError(f"`x` and `y` have different lengths: {len(x)} and {len(y)}.")
            self.n, self._x, self._y = len(x), x, y
        self._shuffle, self._seed = shuffle, seed
        self._batch, self._dataset = None, None

    def steps(self, batch_size):
        """Steps of one epoch at `batch_size` (None when unknown)."""
        if self._fixed is not None:
            return self._steps
        return math.ceil(self.n / batch_size) if self.n else None

    def dataset(self, batch_size, epoch=0):
        """The batched dataset of `epoch` (rebuilt only when `batch_size` changed)."""
        if self._fixed is not None:
            return self._fixed
        if batch_size != self._batch:
            self._batch = batch_size
            seed = None if self._seed is None else int(self._seed) + int(epoch)
            self._dataset = make_dataset(self._x, self._y, batch_size, shuffle=self._shuffle, seed=seed)
        return self._dataset


def count_examples(dataset, batched):
    """Number of examples of a finite `tf.data.Dataset` (one pass over it if not known).

    Args:
        dataset: The dataset.
        batched: Its elements carry a leading batch axis.

    Returns:
        The count (int).

    Raises:
        ValueError: For an infinite or empty dataset.
    """
    card = int(dataset.cardinality())
    if card == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError(
            "The training dataset is infinite (e.g. `.repeat()` without a count): pass a finite "
            "dataset; `fit` repeats it for `epochs` itself."
        )
    if card >= 0 and not batched:
        n = card
    else:  # batched, or unknown cardinality: count once (no model work)
        def size(element):
            first = element[0] if isinstance(element, tuple) else element
            return tf.cast(tf.shape(first)[0], tf.int64) if batched else tf.constant(1, tf.int64)

        n = int(dataset.reduce(tf.constant(0, tf.int64), lambda total, e: total + size(e)))
    if n <= 0:
        raise ValueError("The training dataset is empty.")
    return n


def validation_dataset(validation_data, input_dim, batch_size=None):
    """`validation_data` as a batched dataset: `(x_val, y_val)` arrays or a dataset (kept)."""
    if validation_data is None or is_dataset(validation_data):
        return validation_data
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError("`validation_data` must be a tuple (x_val, y_val) or a tf.data.Dataset.")
    xv = check_inputs(validation_data[0], input_dim, name="validation_data[0]").astype("float32", copy=False)
    return make_dataset(xv, np.asarray(validation_data[1]), batch_size or 256, shuffle=False)
