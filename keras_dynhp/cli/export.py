"""`keras-dynhp export`: a LiteRT file of a `.keras` model."""

import math
import os

from keras_dynhp.cli._common import (
    DATA_HELP,
    DATASET_CHOICES,
    QUANTIZATIONS,
    RunError,
    UsageError,
    _check_model_path,
    _float_in,
    _makedirs,
    _one_line,
    _positive_int,
    load_keras_model,
    load_run_data,
    takes_rows,
)


def _export_arguments(x):
    x.add_argument("model", metavar="MODEL", help="a .keras file (model.keras or compact.keras)")
    x.add_argument("output_path", metavar="OUTPUT", nargs="?", default=None,
                   help="output .tflite path (or --output; default: next to MODEL, e.g. "
                        "model-int8.tflite)")
    x.add_argument("--output", default=None, metavar="PATH", help="output .tflite path, as OUTPUT")
    x.add_argument("--quantization", choices=QUANTIZATIONS, default="float",
                   help="float32, dynamic-range, float16 weights, or full integer (int8 input, "
                        "output and ops, calibrated on 300 training images: the Edge TPU's form)")
    x.add_argument("--dataset", choices=DATASET_CHOICES, default="fashion_mnist",
                   help="where int8's calibration images come from (training images)")
    x.add_argument("--data", default=None, metavar="PATH", help=DATA_HELP + " (calibrates on its x_train)")
    x.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help="fix the batch dimension (1 for the Edge TPU compiler; default dynamic)")
    x.add_argument("--no-gather", action="store_true",
                   help="leave the pruned-pixel GATHER out (a DynHP model.keras only): the file takes "
                        "the kept pixels, listed in OUTPUT's .pixels.json; FULLY_CONNECTED ops only, "
                        "for the Edge TPU")
    x.add_argument("--trainable", action="store_true",
                   help="write the float32 on-device training file (train/infer/save/restore "
                        "signatures) instead")
    x.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="with --trainable")
    x.add_argument("--learning-rate", type=_float_in(0, math.inf, low_open=True, high_open=True),
                   default=0.01, help="with --trainable (default 0.01)")


def cmd_export(args):
    _check_model_path(args.model, (".keras",))
    if args.output_path is not None and args.output is not None:
        raise UsageError("give the output path once: OUTPUT or --output")
    output = args.output_path or args.output
    if output is None:
        stem = os.path.splitext(args.model)[0]
        output = (stem + ("-trainable" if args.trainable else "")
                  + ("" if args.quantization == "float" else f"-{args.quantization}") + ".tflite")
    if not output.endswith(".tflite"):
        raise UsageError(f"the output must end in .tflite; received {output}")
    if args.trainable and (args.quantization != "float" or args.no_gather or args.batch_size):
        raise UsageError("--trainable writes a float32 file with a dynamic batch and the gather: "
                         "drop --quantization, --no-gather and --batch-size")
    model = load_keras_model(args.model, compile=True)
    from keras_dynhp import export, litert, ondevice
    from keras_dynhp._io import write_json
    from keras_dynhp.models import DynHPModel

    if args.no_gather and not isinstance(model, DynHPModel):
        raise RunError(f"--no-gather needs a DynHP model.keras; {args.model} has no gates "
                       "(a compact.keras keeps its pixel gather)")
    calibration = None
    if args.quantization == "int8":  # export_tflite picks them: export.calibration_samples
        (calibration, _), _ = load_run_data(args, layout="rows" if takes_rows(model) else "images")
    _makedirs(os.path.dirname(output), "the directory of")
    try:
        if args.trainable:
            ondevice.export_trainable_tflite(model, output, learning_rate=args.learning_rate,
                                             optimizer=args.optimizer)
        else:
            export.export_tflite(model, output,
                                 quantization=None if args.quantization == "float" else args.quantization,
                                 representative_data=calibration, batch_size=args.batch_size,
                                 select_inputs=not args.no_gather)
    except ValueError as e:  # an untrained model, or a quantization this version lacks
        raise RunError(f"cannot export {args.quantization} .tflite: {_one_line(e)}") from e
    print(f"wrote {output} ({args.quantization}{', trainable' if args.trainable else ''}, "
          f"{os.path.getsize(output):,} bytes)")
    if args.no_gather:
        pixels = output[: -len(".tflite")] + ".pixels.json"
        write_json(pixels, export.kept_inputs(model).tolist())
        print(f"wrote {pixels} (the kept pixels: feed image[pixels] to the file)")
    if args.quantization == "int8":
        bad = litert.non_integer_tensors(output)
        print("full-integer: yes (int8 input/output, int8/int32 tensors)" if not bad
              else f"full-integer: NO, {len(bad)} non-integer tensors, e.g. {bad[:3]}")
    return 0
