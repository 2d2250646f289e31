"""File size, accuracy and per-sample latency of LiteRT files: dense MLP vs DynHP compact.

    python benchmarks/bench_tflite.py --epochs 30 --runs 2000 --rounds 3

Trains a dense 784-300-100-10 baseline (plain `keras.Sequential`, Adam 1e-3,
`--dense-epochs`, batch 64) and a DynHPModel (`build_mlp([300, 100],
l0_lambda=[0.05, 0.05, 0.5], droprate_init=0.7, learning_rate=3e-3)`, mode="hp",
`--epochs`, batch 64) on all of Fashion-MNIST, exports the dense model (float32
and, for reference, int8) and the DynHP compact model (float32, dynamic-range,
int8) and measures each file with the LiteRT interpreter (ai-edge-litert): size,
accuracy on the 10,000 test images, and latency per sample at batch 1 with one
thread (`--warmup` untimed invocations, then the median over `--runs`; each
file is measured `--rounds` times, interleaved, and the median of the medians is
reported). The issue's target: the int8 compact file >= 10x smaller and >= 3x
faster per sample than the dense float file.

With 30 epochs the pruning has mostly levelled off (about 1,000 parameters per
epoch by then); pass `--epochs` to see other points of the trade-off.
"""

import argparse
import os
import tempfile
import time

import keras
import numpy as np

import keras_dynhp
from keras_dynhp.experiments.datasets import load_data
from keras_dynhp import export, litert


def dense_baseline(x, y, epochs, seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((784,), name="pixels"),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="dense_mlp",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("--epochs", type=int, default=30, help="DynHP (hp) epochs")
    parser.add_argument("--dense-epochs", type=int, default=5, help="dense baseline epochs")
    parser.add_argument("--runs", type=int, default=2000, help="timed invocations per measurement")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurements per file")
    parser.add_argument("--output", default=None, help="directory for the .tflite files (default: temporary)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if min(args.epochs, args.dense_epochs, args.runs, args.rounds) < 1 or args.warmup < 0:
        parser.error("--epochs, --dense-epochs, --runs and --rounds must be >= 1, --warmup >= 0")
    out = args.output or tempfile.mkdtemp(prefix="bench_tflite_")
    os.makedirs(out, exist_ok=True)
    (x, y), (xt, yt) = load_data("fashion_mnist")

    start = time.perf_counter()
    dense = dense_baseline(x, y, args.dense_epochs, args.seed)
    dense_s = time.perf_counter() - start
    keras.utils.set_random_seed(args.seed)
    model = keras_dynhp.build_mlp(
        [300, 100], seed=args.seed, l0_lambda=[0.05, 0.05, 0.5], droprate_init=0.7, learning_rate=3e-3
    )
    start = time.perf_counter()
    model.fit(x, y, epochs=args.epochs, batch_size=64, mode="hp", verbose=0, seed=args.seed)
    dynhp_s = time.perf_counter() - start
    compact = export.strip(model)
    print(
        f"dense 784-300-100-10: {dense.count_params():,} parameters, {args.dense_epochs} epochs in {dense_s:.0f} s"
    )
    print(
        f"DynHP compact: architecture {model.architecture()}, {compact.count_params():,} parameters "
        f"({dense.count_params() / compact.count_params():.2f}x fewer), {args.epochs} hp epochs in {dynhp_s:.0f} s"
    )

    files = [
        ("dense float32", dense, None, dense.count_params()),
        ("dense int8 (reference)", dense, "int8", dense.count_params()),
        ("DynHP compact float32", compact, None, compact.count_params()),
        ("DynHP compact dynamic-range", compact, "dynamic", compact.count_params()),
        ("DynHP compact int8", compact, "int8", compact.count_params()),
    ]
    rows = []
    for name, m, quant, params in files:
        path = os.path.join(out, name.split(" (")[0].replace(" ", "_").replace("-", "_").lower() + ".tflite")
        export.export_tflite(m, path, quantization=quant, representative_data=x)
        acc = litert.evaluate_tflite(path, xt, yt, batch_size=100)
        rows.append(
            {
                "name": name,
                "path": path,
                "params": params,
                "bytes": os.path.getsize(path),
                "accuracy": acc,
                "medians": [],
                "p90": [],
            }
        )
    for _ in range(args.rounds):
        for r in rows:
            b = litert.benchmark_tflite(
                r["path"], xt[:256], runs=args.runs, warmup=args.warmup, num_threads=1
            )
            r["medians"].append(b["median_us"])
            r["p90"].append(b["p90_us"])
    base = rows[0]
    base_us = float(np.median(base["medians"]))
    print(
        f"\nLiteRT (ai-edge-litert) interpreter, 1 thread, batch 1, median of {args.rounds} x {args.runs} runs "
        f"after {args.warmup} warm-up; accuracy on the 10,000 Fashion-MNIST test images; files in {out}"
    )
    print(
        "| file | parameters | bytes | smaller than dense float | accuracy % | median us/sample | p90 us/sample "
        "| faster than dense float |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        us = float(np.median(r["medians"]))
        print(
            f"| {r['name']} | {r['params']:,} | {r['bytes']:,} | {base['bytes'] / r['bytes']:.1f}x | "
            f"{100 * r['accuracy']:.2f} | {us:.1f} | {float(np.median(r['p90'])):.1f} | {base_us / us:.1f}x |"
        )
    int8 = rows[-1]
    size_x = base["bytes"] / int8["bytes"]
    speed_x = base_us / float(np.median(int8["medians"]))
    print(
        f"\ntarget (int8 compact vs dense float): size {size_x:.1f}x (>= 10x: {'met' if size_x >= 10 else 'NOT met'}), "
        f"latency {speed_x:.1f}x (>= 3x: {'met' if speed_x >= 3 else 'NOT met'})"
    )
    print(
        "per-round medians (us): "
        + "; ".join(f"{r['name']}: {', '.join(f'{m:.1f}' for m in r['medians'])}" for r in rows)
    )


if __name__ == "__main__":
    main()
