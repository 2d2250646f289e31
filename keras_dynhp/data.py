"""Input pipelines whose batch size can be recomputed every epoch.

Arrays (and :class:`ScaledArray`) go to Keras batch by batch
(:class:`EpochBatches`: no copy of the data per epoch); `tf.data` is used for
datasets (and :func:`make_dataset`) only. TensorFlow is imported on first use, not with this
module: training on arrays on the JAX backend never loads it (it adds about
580 MiB to the process, `benchmarks/bench_memory.py`).
"""

import importlib
import math
import sys

import keras
import numpy as np


def _tf():
    """TensorFlow, imported when a `tf.data` pipeline is first needed."""
    return importlib.import_module("tensorflow")


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
    tf = _tf()
    if is_dataset(x):
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
    """Whether `x` is a `tf.data.Dataset` (never true while TensorFlow is not imported)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(x, tf.data.Dataset)


def example_shape(input_dim):
    """The shape of one example: `input_dim` as a 1-tuple, or a shape tuple as given."""
    if isinstance(input_dim, (tuple, list)):
        return tuple(int(d) for d in input_dim)
    return (int(input_dim),)


def _shape_text(shape):
    return "(n, " + ", ".join(str(d) for d in shape) + ")"


class ScaledArray:
    """Integer data (e.g. uint8 images) held as is and served as float32 `values / divisor`.

    A data set of 60,000 28x28 images takes 47 MB as uint8 and 188 MB as
    float32. `fit` serves a `ScaledArray` batch by batch, converting only the
    rows of each batch, so the float32 copy of the whole set never exists.
    Anything else that needs the full array (`np.asarray(x)`, Keras's own
    `evaluate` or `predict`) gets the converted copy.

    Args:
        values: Integer array of shape (n, ...): the examples as stored.
        divisor: Positive number the values are divided by (default 255:
            uint8 pixels to [0, 1]).

    Example:
        >>> x = ScaledArray(np.array([[0, 255], [51, 102]], dtype=np.uint8))
        >>> x.shape, x.dtype
        ((2, 2), dtype('float32'))
        >>> x[1] * 255
        array([ 51., 102.], dtype=float32)
    """

    dtype = np.dtype("float32")

    def __init__(self, values, divisor=255.0):
        values = np.asarray(values)
        if values.dtype.kind not in "biu":
            raise TypeError(f"ScaledArray holds integer values; received dtype {values.dtype} "
                            "(pass float data as a plain array).")
        if isinstance(divisor, bool) or not isinstance(divisor, (int, float, np.number)):
            raise TypeError(f"`divisor` must be a positive number; received {divisor!r}.")
        if not math.isfinite(float(divisor)) or float(divisor) <= 0:
            raise ValueError(f"`divisor` must be a positive number; received {divisor!r}.")
        self.values, self.divisor = values, float(divisor)

    @property
    def shape(self):
        return self.values.shape

    @property
    def ndim(self):
        return self.values.ndim

    def __len__(self):
        return len(self.values)

    def __getitem__(self, key):
        """The selected examples as float32 (a new array); a slice of rows stays a ScaledArray
        only through :meth:`rows`."""
        return np.divide(self.values[key], np.float32(self.divisor), dtype=np.float32)

    def reshape(self, *shape):
        """The same examples in another shape (a view of the integers)."""
        return ScaledArray(self.values.reshape(*shape), self.divisor)

    def rows(self, key):
        """The examples `key` selects, still held as integers."""
        return ScaledArray(self.values[key], self.divisor)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self):
        return f"ScaledArray(shape={self.shape}, values dtype={self.values.dtype}, divisor={self.divisor:g})"


def take_rows(x, rows):
    """`x[rows]` for arrays; a :class:`ScaledArray` stays one (held as integers)."""
    return x.rows(rows) if isinstance(x, ScaledArray) else x[rows]


def check_inputs(x, input_dim, name="x"):
    """`x` as a float32 array of shape (n, input_dim) of finite numbers, or a clear error.

    `input_dim` may be a shape, e.g. `(28, 28, 1)` for images: `x` is then (n, 28, 28, 1).

    Raises:
        TypeError: For inputs that are not numbers (strings, objects).
        ValueError: For a wrong shape, no examples, or NaN / infinite values
            (with their count and the first example holding one).
    """
    shape = example_shape(input_dim)
    if isinstance(x, ScaledArray):  # integers: finite by construction, converted per batch
        _check_shape(x, shape, name)
        return x
    try:
        x = np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"`{name}` must be an array of shape {_shape_text(shape)}: {e}") from None
    if x.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must hold numbers; received an array of dtype {x.dtype}.")
    _check_shape(x, shape, name)
    x = x.astype("float32", copy=False)
    finite = np.isfinite(x)
    if not finite.all():
        first = int(np.flatnonzero(~finite.reshape(len(x), -1).all(axis=1))[0])
        raise ValueError(
            f"`{name}` holds {int((~finite).sum())} NaN or infinite values (the first in example "
            f"{first}): clean or drop those examples before training."
        )
    return x


def _check_shape(x, shape, name):
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        hint = ""
        if len(shape) > 1 and x.ndim == 2 and x.shape[1] == int(np.prod(shape)):
            hint = f" (flat images: pass `x.reshape(-1, {', '.join(map(str, shape))})`)"
        raise ValueError(f"`{name}` must have shape {_shape_text(shape)}; received shape {x.shape}{hint}.")
    if len(x) == 0:
        raise ValueError(f"`{name}` holds no examples.")


def check_labels(y, n, num_classes=None, name="y"):
    """Integer class ids for `n` examples, in [0, num_classes), or a clear error.

    Args:
        y: Labels: shape (n,) or (n, 1), integers (floats holding whole numbers
            are accepted).
        n: Number of examples they label.
        num_classes: Number of classes of a sparse categorical loss (None: no
            range check).
        name: The argument's name, for the messages.

    Returns:
        The labels as a 1-D NumPy array.

    Raises:
        TypeError: For labels that are not numbers.
        ValueError: For one-hot labels, a length mismatch, non-integers, or ids
            out of range.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must hold integer class ids; received an array of dtype {y.dtype}.")
    if y.ndim == 2 and y.shape[1] > 1:
        raise ValueError(
            f"`{name}` has shape {y.shape}: it looks one-hot, but the model is compiled with a sparse "
            f"loss that takes class ids: pass `{name}.argmax(axis=1)`."
        )
    if y.ndim == 2:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"`{name}` must hold one class id per example ({n}); received shape {y.shape}.")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"`{name}` must hold integer class ids; example {first} has {y[first]!r} "
                f"({int(bad.sum())} such labels)."
            )
        y = y.astype("int64")
    if num_classes is not None and len(y):
        bad = (y < 0) | (y >= num_classes)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"`{name}` must hold class ids in [0, {num_classes}) for this {num_classes}-class "
                f"model; example {first} has {y[first]} ({int(bad.sum())} labels out of range)."
            )
    return y


def checked_labels(dataset, num_classes):
    """`dataset` with every batch's labels checked against [0, num_classes) as it is read.

    Arrays are checked once, up front; a dataset can only be checked as it
    streams (one min/max per batch). A bad batch stops `fit` with a clear error.
    """
    if num_classes is None:
        return dataset
    tf = _tf()

    def check(x, y, *rest):
        y_int = tf.cast(y, tf.int64)
        message = f"labels must be class ids in [0, {num_classes})"
        with tf.control_dependencies([
            tf.debugging.assert_non_negative(y_int, message=message),
            tf.debugging.assert_less(y_int, tf.constant(num_classes, tf.int64), message=message),
        ]):
            y = tf.identity(y)
        return (x, y, *rest)

    return dataset.map(check)


def check_element_spec(dataset, input_dim, name="x"):
    """Checks that a `tf.data.Dataset` yields `(inputs, labels)` that fit the model.

    Raises:
        ValueError: For elements without labels or inputs of the wrong width.
        TypeError: For inputs or labels that are not numbers.
    """
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError(
            f"The dataset `{name}` must yield (inputs, labels) pairs; its elements are {spec}. "
            "Zip the labels in: tf.data.Dataset.zip((inputs, labels))."
        )
    x_spec, y_spec = spec[0], spec[1]
    if not hasattr(x_spec, "shape") or not (x_spec.dtype.is_floating or x_spec.dtype.is_integer):
        raise TypeError(f"The dataset `{name}` must yield numeric inputs; received {x_spec}.")
    shape = example_shape(input_dim)
    rank = x_spec.shape.rank
    if rank is None or rank < len(shape) or tuple(x_spec.shape[rank - len(shape):]) != shape:
        what = (f"width {shape[0]} (shape (..., {shape[0]}))" if len(shape) == 1
                else f"shape (..., {', '.join(map(str, shape))})")
        raise ValueError(
            f"The dataset `{name}` must yield inputs of {what}; "
            f"received inputs of shape {x_spec.shape}."
        )
    if not hasattr(y_spec, "dtype") or not (y_spec.dtype.is_floating or y_spec.dtype.is_integer):
        raise TypeError(f"The dataset `{name}` must yield numeric labels (class ids); received {y_spec}.")


def check_sample_weight(sample_weight, n):
    """Per-example loss weights as a float32 vector of length `n` (Keras's `sample_weight`).

    Raises:
        ValueError: For a shape other than `(n,)`, or values that are negative,
            NaN or infinite.
    """
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "fiub":
        raise ValueError(f"`sample_weight` must hold numbers; received dtype {w.dtype}.")
    w = w.astype("float32")
    if w.shape != (n,):
        raise ValueError(f"`sample_weight` must have one weight per example, shape ({n},); "
                         f"received shape {w.shape}.")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise ValueError(f"`sample_weight` must be finite and >= 0; example {int(np.flatnonzero(bad)[0])} "
                         f"has {w[bad][0]}.")
    return w


def class_weight_to_sample_weight(class_weight, y):
    """Keras's `class_weight`: each example weighs its class's value (1 for classes not in the dict).

    Raises:
        ValueError: For a `class_weight` that is not a dict of class ids to numbers.
    """
    if not isinstance(class_weight, dict):
        raise ValueError(f"`class_weight` must be a dict {{class id: weight}}; received {type(class_weight).__name__}.")
    y = np.asarray(y)
    labels = y.argmax(-1) if y.ndim == 2 else y.reshape(len(y))
    w = np.ones(len(labels), "float32")
    for label, weight in class_weight.items():
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise ValueError(f"`class_weight` keys must be class ids (integers); received {label!r}.")
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating)) \
                or not np.isfinite(weight) or weight < 0:
            raise ValueError(f"`class_weight[{label}]` must be a finite number >= 0; received {weight!r}.")
        w[labels == label] = weight
    return w


def epoch_order(n, seed, epoch):
    """The order in which epoch `epoch` visits `n` examples: a permutation seeded by (seed, epoch).

    A function of the seed and the epoch only, so an epoch sees the same order
    whether the run was interrupted and resumed or not, and every epoch a new one.

    Example:
        >>> epoch_order(5, seed=0, epoch=0).tolist() == epoch_order(5, seed=0, epoch=0).tolist()
        True
    """
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))


class EpochPipeline:
    """The training data of one `fit`, served per epoch at that epoch's batch size.

    Args:
        x: NumPy inputs (n, input_dim) or a `tf.data.Dataset` of `(x, y)`
            elements, batched or not.
        y: NumPy labels (None when `x` is a dataset).
        input_dim: Width of one input example.
        rebatch: The batch size changes between epochs (DynHP): a dataset must
            then be unbatched.
        shuffle: Shuffle (seeded) every epoch.
        seed: Seed of the shuffle; None draws one from NumPy's global generator
            (which `keras.utils.set_random_seed` seeds).
        whole_batches: Leave out the last `n % batch_size` examples of each
            epoch's order (a different few every epoch), so every step of the
            epoch has the same shape. DynHP sets it: its batch size changes
            between epochs, and on a compiling backend each new step shape
            (the last partial batch too) costs a compilation. Arrays and
            unbatched datasets only.
        sample_weight: Per-example loss weights of the arrays (Keras's
            `sample_weight`; a dataset carries its own as `(x, y, w)` elements).

    Attributes:
        n: Number of training examples (the N of the L0 penalty, eq. 5).
        multiple: Each epoch visits a multiple of this many examples (default
            1): under data parallelism every batch, the last one too, must
            split evenly over the devices, so the last `n % multiple`
            examples of each epoch's order are left out of that epoch (a
            different few every epoch). Arrays and unbatched datasets only.

    Shuffling: epoch e visits the examples in :func:`epoch_order` (seed, e), a
    fresh order every epoch, the same one after a resume, also when DynHP
    changes the batch size. Arrays go to Keras as :class:`EpochBatches` (each
    batch's rows gathered in that order, the arrays never copied whole); datasets
    are re-batched and shuffled as datasets. A batched `tf.data.Dataset` is used
    as given (it shuffles itself, or not).
    """

    def __init__(self, x, y, input_dim, rebatch=False, shuffle=True, seed=None, num_classes=None,
                 whole_batches=False, sample_weight=None):
        self._fixed = None
        self._weights = None
        self.multiple = 1
        self.whole_batches = bool(whole_batches)
        self._shuffle = shuffle
        self._seed = int(np.random.randint(2**31 - 1)) if seed is None else int(seed)
        if is_dataset(x):
            if y is not None:
                raise ValueError("Pass labels inside the dataset, not as `y`, when `x` is a tf.data.Dataset.")
            check_element_spec(x, input_dim)
            batched = is_batched(x, example_rank=len(example_shape(input_dim)))
            if batched and rebatch:
                raise ValueError(
                    'mode="dynhp" needs an *unbatched* tf.data.Dataset: DynHP re-batches the '
                    "data every epoch at a new batch size. Call `dataset.unbatch()` or pass "
                    "the dataset before `.batch()`."
                )
            self.n = count_examples(x, batched)
            tf = _tf()
            if batched:
                card = int(x.cardinality())
                if card < 0:  # count the batches too, and tell Keras
                    card = int(x.reduce(tf.constant(0, tf.int64), lambda total, _: total + 1))
                    x = x.apply(tf.data.experimental.assert_cardinality(card))
                self._fixed, self._steps = checked_labels(x, num_classes), card
                return
            if int(x.cardinality()) < 0:  # now known: tell Keras (no "ran out of data")
                x = x.apply(tf.data.experimental.assert_cardinality(self.n))
            self._source, self._tensors, self._num_classes = x, None, num_classes
        else:
            if x is None or y is None:
                raise ValueError("`fit` needs `x` and `y` arrays, or a tf.data.Dataset as `x`.")
            x = check_inputs(x, input_dim)
            if len(np.asarray(y)) != len(x) and np.ndim(y) == 1:
                raise ValueError(f"`x` and `y` have different lengths: {len(x)} and {len(y)}.")
            y = check_labels(y, len(x), num_classes)
            self.n, self._source, self._arrays = len(x), None, (x, y)
            if sample_weight is not None:
                self._weights = check_sample_weight(sample_weight, len(x))

    def steps(self, batch_size):
        """Steps of one epoch at `batch_size` (None when unknown)."""
        if self._fixed is not None:
            return self._steps
        return math.ceil(self.epoch_examples(batch_size) / batch_size) if self.n else None

    def epoch_examples(self, batch_size=None):
        """Examples one epoch visits: `n` rounded down to a multiple of `multiple`.

        With `whole_batches`, rounded down to a multiple of `batch_size` too
        (a batch under data parallelism is itself a multiple of `multiple`),
        unless that would leave no batch at all.
        """
        if not self.n:
            return self.n
        unit = self.multiple
        if self.whole_batches and batch_size and batch_size <= self.n and batch_size % self.multiple == 0:
            unit = int(batch_size)
        return self.n - self.n % unit

    def order(self, epoch, batch_size=None):
        """The order of the examples in epoch `epoch` (arrays and unbatched datasets)."""
        order = epoch_order(self.n, self._seed, epoch) if self._shuffle else np.arange(self.n)
        return order[: self.epoch_examples(batch_size)]

    def fit_inputs(self, batch_size, epoch=0):
        """Keyword arguments of Keras's `fit` for epoch `epoch`: `x`, `y`, `batch_size` or a dataset."""
        if self._fixed is None and self._source is None:
            _check_batch_size(batch_size)
            arrays = self._arrays + (() if self._weights is None else (self._weights,))
            return {"x": EpochBatches(arrays, self.order(epoch, batch_size), batch_size)}
        return {"x": self.dataset(batch_size, epoch)}

    def dataset(self, batch_size, epoch=0):
        """The batched `tf.data.Dataset` of epoch `epoch`."""
        if self._fixed is not None:
            return self._fixed
        _check_batch_size(batch_size)
        tf = _tf()
        if self._source is not None:
            ds = self._source
            if self._shuffle:
                ds = ds.shuffle(max(self.n, 1), seed=self._seed + int(epoch), reshuffle_each_iteration=False)
            if self.epoch_examples(batch_size) != self.n:
                ds = ds.take(self.epoch_examples(batch_size))
            ds = checked_labels(ds.batch(int(batch_size)), self._num_classes)
            return ds.prefetch(tf.data.AUTOTUNE)
        x, y = self._arrays
        order = self.order(epoch, batch_size)
        arrays = (x[order], y[order]) + (() if self._weights is None else (self._weights[order],))
        return tf.data.Dataset.from_tensor_slices(arrays).batch(int(batch_size))


class EpochBatches(keras.utils.PyDataset):
    """One epoch of arrays for Keras's `fit`, gathered batch by batch in a given order.

    Only the rows of the batch being served are copied (and converted, for a
    :class:`ScaledArray`): the arrays themselves are never permuted or
    copied whole, whatever the epoch's order.

    Args:
        arrays: `(x, y)` or `(x, y, sample_weight)`, NumPy arrays or
            :class:`ScaledArray` of the same length.
        order: Indices of the examples, in the order the epoch visits them.
        batch_size: Examples per batch (the last one may hold fewer).
    """

    def __init__(self, arrays, order, batch_size):
        super().__init__()  # served in the training thread: no workers
        self._arrays, self._order, self._batch = tuple(arrays), np.asarray(order), int(batch_size)

    def __len__(self):
        return math.ceil(len(self._order) / self._batch)

    def __getitem__(self, index):
        rows = self._order[index * self._batch:(index + 1) * self._batch]
        return tuple(a[rows] for a in self._arrays)


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer; received {batch_size!r}.")


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
    tf = _tf()
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


def validation_inputs(validation_data, input_dim, batch_size=None, num_classes=None):
    """Keras `fit`'s validation arguments for `validation_data`, checked.

    Args:
        validation_data: None, `(x_val, y_val)` or `(x_val, y_val, sample_weight_val)`
            arrays, or a batched `tf.data.Dataset`.
        input_dim: Width of one input example.
        batch_size: Batch size for arrays (default 256).
        num_classes: Labels must be class ids in [0, num_classes) (None: no check).

    Returns:
        A dict for Keras's `fit`: empty, `{"validation_data": dataset}` (labels
        checked as it streams), or `{"validation_data": (x_val, y_val),
        "validation_batch_size": batch_size}` (arrays stay arrays: no tf.data),
        or `{"validation_data": EpochBatches}` for a :class:`ScaledArray`.
    """
    if validation_data is None:
        return {}
    if is_dataset(validation_data):
        check_element_spec(validation_data, input_dim, name="validation_data")
        return {"validation_data": checked_labels(validation_data, num_classes)}
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise ValueError("`validation_data` must be a tuple (x_val, y_val), (x_val, y_val, sample_weight_val) "
                         "or a tf.data.Dataset.")
    xv = check_inputs(validation_data[0], input_dim, name="validation_data[0]")
    yv = check_labels(validation_data[1], len(xv), num_classes, name="validation_data[1]")
    arrays = (xv, yv)
    if len(validation_data) == 3 and validation_data[2] is not None:
        arrays += (check_sample_weight(validation_data[2], len(xv)),)
    if isinstance(xv, ScaledArray):  # converted batch by batch, as the training data
        return {"validation_data": EpochBatches(arrays, np.arange(len(xv)), int(batch_size or 256))}
    return {"validation_data": arrays, "validation_batch_size": int(batch_size or 256)}
