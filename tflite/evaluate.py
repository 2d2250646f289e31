"""Accuracy of a .tflite classifier on a dataset's test set with the LiteRT interpreter.

    python tflite/evaluate.py runs/demo/model_int8.tflite --dataset fashion_mnist

Float, dynamic-range, float16 and full-int8 files (inputs quantized with the
input tensor's scale and zero point) and on-device training files (through
their `infer` signature) are accepted.
"""


import numpy as np
from _common import UserError, check_file, is_trainable, load_split, make_parser, run


def main():
    parser = make_parser(__doc__)
    parser.add_argument("model", help=".tflite file")
    parser.add_argument("--dataset", default="fashion_mnist", help="default fashion_mnist")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N test images only")
    parser.add_argument("--batch-size", type=int, default=100, help="examples per invocation")
    args = parser.parse_args()
    check_file(args.model, ".tflite")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1; received {args.batch_size}")
    x, y = load_split(args.dataset, "test", args.limit)

    from keras_dynhp import export, ondevice

    if is_trainable(args.model):
        trainer = ondevice.TFLiteTrainer(args.model)
        width = int(trainer._runner("infer").get_input_details()["x"]["shape"][-1])
        kind = "trainable (infer signature)"
    else:
        from _common import input_width

        width = input_width(args.model)
        kind = "inference"
    if width != x.shape[1]:
        raise UserError(
            f"{args.model} takes inputs of width {width}; {args.dataset} images have {x.shape[1]}"
        )
    if kind == "inference":
        acc = litert.evaluate_tflite(args.model, x, y, batch_size=args.batch_size)
    else:
        pred = np.concatenate(
            [trainer.infer(x[i : i + args.batch_size]).argmax(-1) for i in range(0, len(x), args.batch_size)]
        )
        acc = float((pred == y).mean())
    print(f"{args.model} ({kind}): accuracy {100 * acc:.2f}% on {len(x):,} {args.dataset} test images")


if __name__ == "__main__":
    run(main)
