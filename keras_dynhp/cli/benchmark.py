"""`keras-dynhp benchmark`: size and per-sample latency of `.tflite` files."""

import os

from keras_dynhp.cli._common import (
    BENCHMARK_SAMPLES,
    DATASET_CHOICES,
    RunError,
    _check_model_path,
    _non_negative_int,
    _positive_int,
    _tflite_info,
    load_dataset,
)


def _benchmark_arguments(b):
    b.add_argument("models", nargs="+", metavar="MODEL",
                   help=".tflite files (inference files, not trainable ones)")
    b.add_argument("--dataset", choices=(*DATASET_CHOICES, "random"), default="fashion_mnist",
                   help=f"the first {BENCHMARK_SAMPLES} test images are fed to the model, or uniform "
                        "noise with 'random'")
    b.add_argument("--runs", type=_positive_int, default=1000, help="timed invocations (default 1000)")
    b.add_argument("--warmup", type=_non_negative_int, default=100,
                   help="untimed invocations first (default 100)")
    b.add_argument("--threads", type=_positive_int, default=1, help="interpreter threads (default 1)")


def cmd_benchmark(args):
    for path in args.models:
        _check_model_path(path, (".tflite",))
    widths = {}
    for path in args.models:
        trainable, widths[path] = _tflite_info(path)
        if trainable:
            raise RunError(f"{path} is an on-device training file; benchmark an inference export")
    import numpy as np

    from keras_dynhp import litert

    x = None
    if args.dataset != "random":
        _, (x, _) = load_dataset(args.dataset)
        x = x[:BENCHMARK_SAMPLES]
        for path, width in widths.items():
            if width != x.shape[1]:
                raise RunError(f"{path} takes inputs of width {width}; {args.dataset} images have "
                               f"{x.shape[1]}")
    print("| file | bytes | median us/sample | p90 us/sample |")
    print("|---|---|---|---|")
    for path, width in widths.items():
        data = x if x is not None else np.random.default_rng(0).random(
            (BENCHMARK_SAMPLES, width), dtype="float32")
        r = litert.benchmark_tflite(path, data, runs=args.runs, warmup=args.warmup,
                                    num_threads=args.threads)
        print(f"| {os.path.basename(path)} | {r['file_bytes']:,} | {r['median_us']:.1f} | "
              f"{r['p90_us']:.1f} |", flush=True)
    return 0
