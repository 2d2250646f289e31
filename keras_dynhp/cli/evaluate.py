"""`keras-dynhp evaluate`: the test accuracy of a `.keras` or `.tflite` model."""

import json

from keras_dynhp.cli._common import (
    DATA_HELP,
    DATASET_CHOICES,
    RunError,
    _check_model_path,
    _InferSignature,
    _one_line,
    _positive_int,
    _tflite_info,
    data_name,
    load_keras_model,
    load_run_data,
    takes_rows,
)


def _evaluate_arguments(e):
    e.add_argument("model", metavar="MODEL",
                   help="a .keras file, or a .tflite file (inference or on-device training file)")
    e.add_argument("--dataset", choices=DATASET_CHOICES, default="fashion_mnist")
    e.add_argument("--data", default=None, metavar="PATH", help=DATA_HELP + " (its test arrays)")
    e.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="evaluate the first N test images only (default: all)")
    e.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help="examples per predict call or interpreter invocation (default 1000)")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def cmd_evaluate(args):
    from keras_dynhp import evaluation

    ext = _check_model_path(args.model, (".keras", ".tflite"))
    model = load_keras_model(args.model) if ext == ".keras" else None
    rows = model is None or takes_rows(model)  # an MLP (and the .tflite files) take rows, a CNN images
    (_, _), (xt, yt) = load_run_data(args, layout="rows" if rows else "images")
    if args.limit is not None:
        xt, yt = xt[: args.limit], yt[: args.limit]
    if ext == ".keras":
        try:  # a model for other inputs is the user's mistake, not a bug
            model.predict(xt[:1], verbose=0)
        except ValueError as e:
            raise RunError(f"{args.model} does not take {data_name(args)} images: {_one_line(e)}") from e
        runtime, kind = "keras", type(model).__name__
    else:
        trainable, width = _tflite_info(args.model)
        if width != xt.shape[1]:
            raise RunError(f"{args.model} takes inputs of width {width}; {data_name(args)} images have "
                           f"{xt.shape[1]}")
        model = _InferSignature(args.model) if trainable else args.model
        runtime, kind = "litert", "tflite, trainable (infer signature)" if trainable else "tflite"
    kwargs = {} if args.batch_size is None else {"batch_size": args.batch_size}
    try:
        accuracy = evaluation.accuracy(model, xt, yt, **kwargs)
    except (ValueError, RuntimeError) as e:
        if runtime == "keras":
            raise
        raise RunError(f"cannot run {args.model} on {data_name(args)}: {_one_line(e)}") from e
    n = len(yt)  # every example counts, the last batch too
    correct = round(accuracy * n)
    result = {"model": args.model, "runtime": runtime, "kind": kind, "dataset": data_name(args),
              "test_examples": n, "test_correct": correct, "test_accuracy": accuracy,
              "error_pct": 100 * (1 - accuracy)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model} ({kind}, {runtime}) on {n:,} {data_name(args)} test images: "
              f"accuracy {100 * accuracy:.2f}% ({correct:,}/{n:,}), error {100 * (1 - accuracy):.2f}%")
    return 0
