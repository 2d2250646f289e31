"""Helpers shared by the tflite/ scripts: one-line user errors, model and data loading."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class UserError(Exception):
    """A mistake of the caller (missing file, bad argument): reported in one line, exit 1."""


def run(main):
    """Runs `main()`; a UserError becomes `<script>: error: <message>` and exit status 1."""
    try:
        main()
    except UserError as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(1)


def make_parser(doc):
    """An argument parser whose help shows the script's docstring (first line, then the rest)."""
    import argparse

    return argparse.ArgumentParser(
        description=doc.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(doc.splitlines()[1:]),
    )


def first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def check_file(path, suffix):
    if not os.path.isfile(path):
        raise UserError(f"no such file: {path}")
    if not path.endswith(suffix):
        raise UserError(f"expected a {suffix} file; received {path}")


def load_keras_model(path):
    """A saved `.keras` DynHPModel or compact model (keras_dynhp's classes are registered)."""
    check_file(path, ".keras")
    import keras

    import keras_dynhp  # noqa: F401  (registers DynHPModel, L0Dense, FeatureSelect)

    try:
        return keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 - any loading failure is the file's fault here
        raise UserError(f"cannot load {path}: {first_line(e)}") from None


def load_split(dataset, split, limit=None):
    """(x, y) of a dataset's `train` or `test` split, flattened floats in [0, 1]."""
    from keras_dynhp.experiments import datasets

    if dataset not in datasets.DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; expected one of {', '.join(datasets.DATASETS)}")
    try:
        train, test = datasets.load_data(dataset)
    except datasets.DataError as e:
        raise UserError(f"cannot load {dataset}: {first_line(e)}") from None
    x, y = train if split == "train" else test
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit must be >= 1; received {limit}")
        x, y = x[:limit], y[:limit]
    return x, y


def is_trainable(path):
    """Whether a `.tflite` file has the on-device training signatures."""
    from keras_dynhp.export import _interpreter

    try:
        signatures = _interpreter(path).get_signature_list()
    except ValueError as e:
        raise UserError(f"cannot read {path}: {first_line(e)}") from None
    return {"train", "infer"} <= set(signatures)


def input_width(path):
    from keras_dynhp.export import _interpreter

    return int(_interpreter(path).get_input_details()[0]["shape"][-1])
