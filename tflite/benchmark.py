"""Per-sample latency and file size of .tflite classifiers (LiteRT interpreter).

    python tflite/benchmark.py runs/demo/model.tflite runs/demo/model_int8.tflite --runs 2000

Batch 1, one interpreter per file with `--threads` threads (default 1), `--warmup`
untimed invocations, then the median (and 90th percentile) over `--runs` timed
invocations; each timed call sets one test image (quantized for int8 files) and
invokes. The interpreter applies its default delegate (XNNPACK) as on a device.
Timings depend on the machine and on what else runs on it.
"""

import os

import numpy as np
from _common import UserError, check_file, input_width, is_trainable, load_split, make_parser, run


def main():
    parser = make_parser(__doc__)
    parser.add_argument("models", nargs="+", help=".tflite files (inference files, not trainable ones)")
    parser.add_argument(
        "--dataset",
        default="fashion_mnist",
        help="test images fed to the model, or 'random' for uniform noise",
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        raise UserError("--runs and --threads must be >= 1 and --warmup >= 0")
    for path in args.models:
        check_file(path, ".tflite")
        if is_trainable(path):
            raise UserError(f"{path} is an on-device training file; benchmark an inference export")
    x = None if args.dataset == "random" else load_split(args.dataset, "test", 256)[0]

    from keras_dynhp import export

    print("| file | bytes | median us/sample | p90 us/sample |")
    print("|---|---|---|---|")
    for path in args.models:
        width = input_width(path)
        data = x
        if data is None:
            data = np.random.default_rng(0).random((256, width), dtype="float32")
        elif data.shape[1] != width:
            raise UserError(
                f"{path} takes inputs of width {width}; {args.dataset} images have {data.shape[1]}"
            )
        r = litert.benchmark_tflite(path, data, runs=args.runs, warmup=args.warmup, num_threads=args.threads)
        print(
            f"| {os.path.basename(path)} | {r['file_bytes']:,} | {r['median_us']:.1f} | {r['p90_us']:.1f} |"
        )


if __name__ == "__main__":
    run(main)
