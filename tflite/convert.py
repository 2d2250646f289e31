"""Converts a saved .keras model (DynHPModel or compact) to a LiteRT .tflite file.

    python tflite/convert.py runs/demo/model.keras runs/demo/model_int8.tflite --quantization int8

A DynHPModel is stripped first (gates folded into the kernels, zero-gated units
removed). `--quantization int8` writes a full-integer file (int8 input, output
and ops) calibrated on the dataset's training images; it is what the Edge TPU
compiler takes (`edgetpu_compiler model_int8.tflite`, run outside this project;
add `--batch-size 1`, it needs static shapes). `--trainable` writes the float
on-device training file (train/infer/save/restore signatures) instead.
"""

import json
import os

import numpy as np
from _common import UserError, first_line, load_keras_model, load_split, make_parser, run

QUANTIZATIONS = {"float": None, "dynamic": "dynamic", "float16": "float16", "int8": "int8"}


def main():
    parser = make_parser(__doc__)
    parser.add_argument("model", help="saved .keras file (DynHPModel or compact Keras model)")
    parser.add_argument("output", help="output .tflite path")
    parser.add_argument("--quantization", choices=sorted(QUANTIZATIONS), default="float")
    parser.add_argument(
        "--dataset",
        default="fashion_mnist",
        help="dataset whose training images calibrate int8 (default fashion_mnist)",
    )
    parser.add_argument(
        "--calibration-samples",
        type=int,
        default=300,
        help="training images used for int8 calibration (at most 300 are used)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="fix the batch dimension (1 for the Edge TPU compiler); default dynamic",
    )
    parser.add_argument(
        "--no-gather",
        action="store_true",
        help="leave the pruned-pixel GATHER out (a DynHP model.keras only): the file takes the kept "
        "pixels, listed in <output>.pixels.json; FULLY_CONNECTED ops only, for the Edge TPU",
    )
    parser.add_argument(
        "--trainable", action="store_true", help="write the on-device training file (float32) instead"
    )
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="with --trainable")
    parser.add_argument("--learning-rate", type=float, default=0.01, help="with --trainable")
    args = parser.parse_args()
    if not args.output.endswith(".tflite"):
        raise UserError(f"the output must end in .tflite; received {args.output}")
    if args.trainable and args.quantization != "float":
        raise UserError("--trainable files are float32: drop --quantization")
    if args.calibration_samples < 1:
        raise UserError(f"--calibration-samples must be >= 1; received {args.calibration_samples}")

    model = load_keras_model(args.model)
    from keras_dynhp import export, ondevice
    from keras_dynhp.models import DynHPModel

    if args.no_gather and (args.trainable or not isinstance(model, DynHPModel)):
        raise UserError("--no-gather needs a DynHP model.keras (not compact.keras) and no --trainable")

    try:
        if args.trainable:
            path = ondevice.export_trainable_tflite(
                model, args.output, learning_rate=args.learning_rate, optimizer=args.optimizer
            )
        else:
            representative = None
            if args.quantization == "int8":
                x, _ = load_split(args.dataset, "train")
                idx = np.random.default_rng(0).permutation(len(x))[: args.calibration_samples]
                representative = x[idx]
            path = export.export_tflite(
                model,
                args.output,
                quantization=QUANTIZATIONS[args.quantization],
                representative_data=representative,
                batch_size=args.batch_size,
                select_inputs=not args.no_gather,
            )
            if args.no_gather:
                pixels = args.output[: -len(".tflite")] + ".pixels.json"
                with open(pixels, "w") as f:
                    json.dump(export.kept_inputs(model).tolist(), f)
                print(f"wrote {pixels} (feed image[pixels] to the file)")
    except ValueError as e:
        raise UserError(first_line(e)) from None
    print(
        f"wrote {path} ({os.path.getsize(path):,} bytes, {args.quantization}"
        f"{', trainable' if args.trainable else ''})"
    )
    if args.quantization == "int8":
        bad = litert.non_integer_tensors(path)
        print(
            "full-integer: yes (int8 input/output, int8/int32 tensors)"
            if not bad
            else f"full-integer: NO, {len(bad)} non-integer tensors, e.g. {bad[:3]}"
        )


if __name__ == "__main__":
    run(main)
