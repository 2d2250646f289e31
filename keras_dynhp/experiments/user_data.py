"""A user's own data for the command line: a `.npz` file of arrays or a folder of images.

`keras-dynhp train --data PATH` (and `evaluate`, `export`) read it through
:func:`load_file`:

- ``my_data.npz`` holding ``x_train``, ``y_train``, ``x_test`` and ``y_test``
  (``numpy.savez``): inputs of any shape and numeric type, labels integer
  class ids 0..k-1.
- ``DIR/`` holding one sub-folder of images per class (sorted names are the
  class ids), as `keras.utils.image_dataset_from_directory` reads them; with
  ``DIR/train/`` and ``DIR/test/`` sub-folders of that form, those are the two
  sets, otherwise a seeded fifth of each class is held out as the test set.
  All images must have one size; they are read with Pillow (no TensorFlow)
  as grayscale when every image is, else as RGB.

uint8 data (images, or uint8 arrays in the `.npz`) are returned as
:class:`keras_dynhp.data.ScaledArray` (held as uint8, served in [0, 1]); other
numbers as float32 arrays, as they are. Every problem is a :class:`DataFileError`
with one line naming the file.
"""

import os
import zipfile

import numpy as np

from keras_dynhp.experiments.datasets import DataError

__all__ = ["IMAGE_EXTENSIONS", "DataFileError", "load_file"]

#: The image files a class folder may hold (as Keras's image_dataset_from_directory).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class DataFileError(DataError, ValueError):
    """A user's data file or folder that cannot be used (the message names it)."""


def load_file(path, test_fraction=0.2, seed=0):
    """Reads `path` (a `.npz` file or a folder of class sub-folders of images).

    Args:
        path: The file or folder.
        test_fraction: For a folder without `train/` and `test/`: the share of
            each class held out as the test set.
        seed: Seed of that hold-out.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``; inputs as
        :class:`~keras_dynhp.data.ScaledArray` for uint8 data, else float32;
        labels int64.

    Raises:
        DataFileError: With one line naming the file and what is wrong.
    """
    if os.path.isdir(path):
        (x, y), (xt, yt) = _load_folder(path, test_fraction, seed)
    elif os.path.isfile(path):
        (x, y), (xt, yt) = _load_npz(path)
    else:
        raise DataFileError(f"{path}: no such file or folder")
    return (_inputs(x), y), (_inputs(xt), yt)


def _inputs(x):
    from keras_dynhp.data import ScaledArray  # the core loads Keras: only once data are read

    return ScaledArray(x) if x.dtype == np.uint8 else x.astype(np.float32, copy=False)


def _load_npz(path):
    if not zipfile.is_zipfile(path):
        raise DataFileError(f"{path}: not a .npz file (numpy.savez writes one)")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [name for name in NPZ_ARRAYS if name not in f.files]
            if missing:
                raise DataFileError(f"{path}: missing array(s) {', '.join(missing)} (a data file holds "
                                    f"{', '.join(NPZ_ARRAYS)}; it has {', '.join(f.files) or 'none'})")
            arrays = {name: f[name] for name in NPZ_ARRAYS}
    except DataFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataFileError(f"{path}: not a readable .npz file of arrays ({e})") from None
    x, y, xt, yt = (arrays[name] for name in NPZ_ARRAYS)
    for name, inputs in (("x_train", x), ("x_test", xt)):
        if inputs.dtype.kind not in "biuf" or inputs.ndim < 2 or len(inputs) == 0:
            raise DataFileError(f"{path}: {name} must be a non-empty numeric array of shape (n, ...); "
                                f"it is {inputs.dtype} of shape {inputs.shape}")
        if inputs.dtype.kind == "f" and not np.isfinite(inputs).all():
            raise DataFileError(f"{path}: {name} holds NaN or infinite values")
    if x.shape[1:] != xt.shape[1:]:
        raise DataFileError(f"{path}: x_train examples have shape {x.shape[1:]}, x_test examples "
                            f"{xt.shape[1:]}")
    y = _labels(path, "y_train", y, len(x), "x_train")
    yt = _labels(path, "y_test", yt, len(xt), "x_test")
    if yt.max() > y.max():
        raise DataFileError(f"{path}: y_test holds class {int(yt.max())}, which y_train never has "
                            f"(its classes are 0..{int(y.max())})")
    return (x, y), (xt, yt)


def _labels(path, name, y, n, x_name):
    if y.ndim != 1 or len(y) != n:
        raise DataFileError(f"{path}: {name} must hold one class id per example of {x_name} ({n}); "
                            f"it has shape {y.shape}")
    if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataFileError(f"{path}: {name} must hold integer class ids; it is {y.dtype}")
    if y.min() < 0:
        raise DataFileError(f"{path}: {name} holds the label {int(y.min())}: class ids are 0..k-1")
    return y.astype(np.int64)


def _class_folders(path):
    try:
        names = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    except OSError as e:
        raise DataFileError(f"{path}: cannot list the folder ({e.strerror})") from None
    return names


def _images_of(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS))


def _load_folder(path, test_fraction, seed):
    classes = _class_folders(path)
    split = set(classes) == {"train", "test"}
    if split:
        classes = _class_folders(os.path.join(path, "train"))
        test_classes = _class_folders(os.path.join(path, "test"))
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise DataFileError(f"{os.path.join(path, 'test')}: class folder(s) {', '.join(unknown)} "
                                f"not in {os.path.join(path, 'train')}")
    if len(classes) < 2:
        raise DataFileError(f"{path}: needs one sub-folder of images per class (at least 2); "
                            f"found {len(classes)}")
    if not 0.0 < test_fraction < 1.0:
        raise DataFileError(f"test_fraction must be in (0, 1); received {test_fraction}")
    if split:
        train = [(p, c) for c, name in enumerate(classes)
                 for p in _images_of(os.path.join(path, "train", name))]
        test = [(p, classes.index(name)) for name in test_classes
                for p in _images_of(os.path.join(path, "test", name))]
    else:
        rng = np.random.default_rng(seed)
        train, test = [], []
        for c, name in enumerate(classes):
            files = _images_of(os.path.join(path, name))
            n_test = max(1, round(len(files) * test_fraction)) if len(files) > 1 else 0
            held = set(rng.permutation(len(files))[:n_test].tolist())
            for i, p in enumerate(files):
                (test if i in held else train).append((p, c))
    for part, files in (("training", train), ("test", test)):
        if not files:
            raise DataFileError(f"{path}: no {part} images (files ending in "
                                f"{', '.join(IMAGE_EXTENSIONS)})")
    images = _read_images([p for p, _ in train + test])
    x = images[: len(train)]
    return ((x, np.array([c for _, c in train], np.int64)),
            (images[len(train):], np.array([c for _, c in test], np.int64)))


def _read_images(paths):
    """The images as one uint8 array (n, height, width, 1 or 3): two passes, one image at a time."""
    try:
        from PIL import Image
    except ImportError:
        raise DataFileError("reading a folder of images needs Pillow: pip install 'keras_dynhp[images]'") from None

    def opened(p):
        try:
            im = Image.open(p)
            im.load()
            return im
        except Exception as e:  # noqa: BLE001 (Pillow raises many types for a bad file)
            raise DataFileError(f"{p}: unreadable image ({type(e).__name__}: {e})") from None

    size, modes = None, set()
    for p in paths:  # sizes and modes first: the array is allocated once
        with opened(p) as im:
            size = size or im.size
            if im.size != size:
                raise DataFileError(f"{p}: image of {im.size[0]}x{im.size[1]} pixels; the others are "
                                    f"{size[0]}x{size[1]} (resize them to one size)")
            modes.add(im.mode)
    mode = "L" if modes <= {"L", "1"} else "RGB"
    out = np.empty((len(paths), size[1], size[0], 1 if mode == "L" else 3), np.uint8)
    for i, p in enumerate(paths):
        with opened(p) as im:
            out[i] = np.asarray(im.convert(mode)).reshape(out.shape[1:])
    return out
