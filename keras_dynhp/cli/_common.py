"""Shared pieces of the `keras-dynhp` commands: errors, argument types, messages, file checks."""

import argparse
import json
import math
import os
import sys

PROG = "keras-dynhp"

QUANTIZATIONS = ("float", "dynamic", "float16", "int8")

DATASET_CHOICES = ("fashion_mnist", "mnist")

DATA_NAMES = ("all", "mnist", "fashion_mnist", "fashion-mnist")

UNITS_CHOICES = ("KiB", "paper")

PROFILE_CHOICES = ("paper", "quick", "compress100", "compress30", "tiny")  # the keys of experiments.reproduce.PROFILES

BENCHMARK_SAMPLES = 256  # test images cycled through by `benchmark`


class UsageError(Exception):
    """A bad command line: exit status 2."""


class RunError(Exception):
    """A missing or unsuitable file, or missing data: exit status 1."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {text!r}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; received {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; received {text!r}")
    return value


def _float_in(low, high, low_open=False, high_open=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high)
        if not ok:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"expected a number in {interval}; received {text!r}")
        return value

    return parse


def _comma_list(text, cast, valid, example):
    """Parses "a,b,c" with `cast`; every value must pass `valid`."""
    try:
        values = [cast(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(valid(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected {example}; received {text!r}")
    return values


def _hidden(text):
    return _comma_list(text, int, lambda u: u > 0,
                       "comma-separated positive integers such as 300,100")


def _lambdas(text):
    return _comma_list(text, float, lambda v: math.isfinite(v) and v >= 0,
                       "a number >= 0 or a comma-separated list such as 0.05,0.05,0.5")


def _budget(text):
    from keras_dynhp import memory

    try:
        return memory.parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _budget_rule(text):
    """`reproduce --budget`: "best-sp", "paper" or a memory size."""
    if text in ("best-sp", "paper"):
        return text
    _budget(text)
    return text


class _Parser(argparse.ArgumentParser):
    """Prints argparse errors as one line, like every other user error."""

    def error(self, message):
        self.exit(2, f"{self.prog.split()[0]}: error: {message} (see '{self.prog} --help')\n")


def _say(args, *parts):
    if not getattr(args, "quiet", False):
        print(*parts, flush=True)


def _warn(message):
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def _one_line(error):
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _lines(error):
    """The message of one of our own errors with its line structure (lists stay lists)."""
    lines = [line.rstrip() for line in str(error).strip().splitlines() if line.strip()]
    return "\n".join(lines) or type(error).__name__


DATA_HELP = ("your own data instead of --dataset: a .npz file with x_train, y_train, x_test, y_test, "
             "or a folder with one sub-folder of images per class (or train/ and test/ folders "
             "of those)")


def data_name(args):
    """What the data of `args` are called in messages: --dataset, or the stem of --data."""
    path = getattr(args, "data", None)
    if not path:
        return args.dataset
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def takes_rows(model):
    """The model takes each example as one row (an MLP), not as an image."""
    shape = getattr(model, "input_shape_", None)  # a DynHPModel's example shape (int: a width)
    if shape is not None:
        return isinstance(shape, int) or len(tuple(shape)) == 1
    return len(model.input_shape) == 2


def load_run_data(args, as_uint8=False, layout=None):
    """`((x, y), (xt, yt))` of `--data PATH` if given, else of the built-in `--dataset`.

    `layout` "rows": each example as one row (the MLPs' inputs); "images": as an
    image (height, width, channels: a convolutional network's inputs); None:
    the built-in data sets as rows and a user's data as stored. Problems with
    the user's file are a RunError naming it.
    """
    if layout not in (None, "rows", "images"):
        raise ValueError(f"layout must be None, 'rows' or 'images'; received {layout!r}")
    path = getattr(args, "data", None)
    if not path:
        return load_dataset(args.dataset, as_uint8=as_uint8, flatten=layout != "images")
    import numpy as np

    from keras_dynhp.experiments import user_data

    try:
        (x, y), (xt, yt) = user_data.load_file(path)
    except user_data.DataFileError as e:
        raise RunError(f"--data: {_one_line(e)}") from e
    if layout == "rows":
        x, xt = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    elif layout == "images":
        if x.ndim == 3:  # grayscale images without a channel axis
            x, xt = x.reshape(*x.shape, 1), xt.reshape(*xt.shape, 1)
        if x.ndim != 4:
            raise RunError(f"--data: {path} holds examples of shape {tuple(x.shape[1:])}; a "
                           "convolutional network needs images (height, width[, channels])")
    if not as_uint8:
        x, xt = (np.asarray(a, dtype="float32") for a in (x, xt))
    return (x, y), (xt, yt)


def load_dataset(name, as_uint8=False, flatten=True):
    """`datasets.load_data(name, flatten, as_uint8=...)`, with missing or corrupt data as a RunError."""
    from keras_dynhp.experiments import datasets

    try:
        return datasets.load_data(name, flatten=flatten, as_uint8=as_uint8)
    except datasets.DataError as e:
        raise RunError(f"cannot load {name}: {_lines(e)}") from e


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunError(f"{path} not found (is this a `{PROG} train` output directory?)") from None
    except ValueError as e:
        raise RunError(f"cannot read {path}: the JSON check failed ({_one_line(e)}; the file is "
                       "truncated or altered)") from e
    except OSError as e:
        raise RunError(f"cannot read {path}: {_one_line(e)}") from e


def _makedirs(directory, what):
    try:
        if directory:
            os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create {what} {directory}: {_one_line(e)}") from e


def write_history(history, json_path, csv_path=None):
    """Writes a history (dict of per-epoch lists) as JSON and optionally CSV (one row per epoch)."""
    from keras_dynhp._io import to_jsonable, write_csv, write_json

    history = to_jsonable(dict(history))
    write_json(json_path, history)
    if csv_path:
        epochs = max((len(v) for v in history.values()), default=0)
        write_csv(csv_path, [{"epoch": i, **{k: v[i] if i < len(v) else None for k, v in history.items()}}
                             for i in range(epochs)])


def _verbose(args):
    if args.quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2  # progress bars flood logs: one line per epoch there


def _check_model_path(path, allowed):
    """The file's extension, after checking that it exists and is one of `allowed`."""
    if not os.path.exists(path):
        raise RunError(f"no such file: {path}")
    if os.path.isdir(path):
        raise RunError(f"{path} is a directory, not a {' or '.join(allowed)} model file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in allowed:
        raise RunError(f"{path}: expected a {' or '.join(allowed)} model file; received a "
                       f"{ext or 'extensionless'} file")
    return ext


def load_keras_model(path, compile=False):
    """`keras_dynhp.load_model` with unreadable files as RunErrors naming the check that failed.

    A `.keras` file is a zip archive: empty, truncated or random files fail the
    zip check, altered ones the CRC check of a member (Keras itself would say
    "File not found" or fail deep in h5py).
    """
    import zipfile
    import zlib

    from keras_dynhp import models

    if os.path.getsize(path) == 0:
        raise RunError(f"{path} is not a .keras file: it is empty (0 bytes; an interrupted write?)")
    if not zipfile.is_zipfile(path):
        raise RunError(f"{path} is not a .keras file: the zip archive check failed (a .keras model "
                       "is a zip archive; this file is truncated or something else)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()  # reads every member and checks its CRC-32
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError, ValueError) as e:
        raise RunError(f"{path} is not a .keras file: the zip archive check failed "
                       f"({_one_line(e)})") from e
    if bad is not None:
        raise RunError(f"{path} is corrupt: the CRC-32 check of {bad} in the archive failed "
                       "(the file was altered or damaged)")
    if "config.json" not in names:
        raise RunError(f"{path} is not a .keras model: the archive check failed (no config.json)")
    try:
        return models.load_model(path, compile=compile)
    except (ValueError, OSError, zipfile.BadZipFile, KeyError, TypeError, AttributeError) as e:
        raise RunError(f"cannot load {path} as a Keras model: {_one_line(e)}") from e


def _check_tflite_file(path):
    """Empty files and files without the `TFL3` identifier are RunErrors (before LiteRT reads them)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise RunError(f"cannot read {path}: {_one_line(e)}") from e
    if not head:
        raise RunError(f"{path} is not a .tflite file: it is empty (0 bytes; an interrupted write?)")
    if head[4:8] != b"TFL3":
        raise RunError(f"{path} is not a .tflite file: the file identifier check failed (bytes 4-8 "
                       f"are {head[4:8]!r}, not b'TFL3'; the file is truncated or something else)")


def _tflite_info(path):
    """(trainable, input width) of a .tflite file; unreadable files are RunErrors."""
    from keras_dynhp import litert

    _check_tflite_file(path)
    try:
        interpreter = litert.load_interpreter(path)
    except (ValueError, RuntimeError) as e:
        raise RunError(f"{path} is not a valid .tflite file: LiteRT's flatbuffer check failed "
                       f"({_one_line(e)}); the file is truncated or altered") from e
    try:
        signatures = interpreter.get_signature_list()
        trainable = {"train", "infer"} <= set(signatures)
        if trainable:
            from keras_dynhp.ondevice import TFLiteTrainer

            detail = TFLiteTrainer(path).signature_runner("infer").get_input_details()["x"]
        else:
            detail = interpreter.get_input_details()[0]
    except (ValueError, RuntimeError) as e:
        raise RunError(f"cannot read {path}: {_one_line(e)}") from e
    return trainable, int(detail["shape"][-1])


class _InferSignature:
    """The `infer` signature of an on-device training file, with Keras's `predict` interface.

    So that :func:`keras_dynhp.evaluation.accuracy` measures these files too.
    """

    def __init__(self, path):
        from keras_dynhp.ondevice import TFLiteTrainer

        self.trainer = TFLiteTrainer(path)

    def predict(self, x, batch_size=1000, verbose=0):
        import numpy as np

        del verbose
        return np.concatenate([self.trainer.infer(x[i:i + batch_size])
                               for i in range(0, len(x), batch_size)])
