"""Main job: a short DynHP run on Fashion-MNIST, a summary, and a .tflite file.

    python examples/demo.py --epochs 3 --output runs/demo

Trains LeNet-300-100 with DynHP (initial batch 16, alpha_bs, budget = the memory of
SP at batch 128, the paper's Fashion-MNIST reference), then prints error, model size
and training memory against a dense baseline of the same shape, writes the pruned
`.keras` model, the per-epoch report (CSV) and a float `.tflite` of the gate-free
compact model, and checks the `.tflite` accuracy with the LiteRT interpreter.
"""

import argparse
import os
import time

import keras
import numpy as np

import keras_dynhp
from keras_dynhp import evaluation, export, memory
from keras_dynhp.experiments.datasets import load_data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--alpha-bs", type=float, default=0.98)
    parser.add_argument("--lambda", dest="lam", type=float, nargs="+", default=[0.05, 0.05, 0.5],
                        help="L0 lambda (one value or one per gated layer); the paper's 0.01 needs "
                             "hundreds of epochs to prune")
    parser.add_argument("--output", default="runs/demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)
    keras.utils.set_random_seed(args.seed)

    (x, y), (xt, yt) = load_data("fashion_mnist")
    model = keras_dynhp.build_mlp([300, 100], seed=args.seed, l0_lambda=args.lam, droprate_init=0.7,
                                  learning_rate=3e-3)
    dense_params = model.count_params_stored()  # before any pruning: LeNet-300-100's 266,610
    budget = memory.mo_bytes(dense_params, 128, x.shape[1])  # SP at batch 128: 1,433.45 KiB
    start = time.perf_counter()
    history = model.fit(
        x, y, epochs=args.epochs, mode="dynhp", alpha_bs=args.alpha_bs, memory_budget=budget,
        initial_batch_size=16, validation_data=(xt, yt), seed=args.seed, verbose=2,
        callbacks=[keras_dynhp.callbacks.PruningLogger(os.path.join(args.output, "history.csv"))],
    )
    seconds = time.perf_counter() - start
    model.save(os.path.join(args.output, "model.keras"))
    tflite_path = export.export_tflite(model, os.path.join(args.output, "model.tflite"))
    tflite_acc = evaluation.accuracy(tflite_path, xt, yt)

    h = history.history
    # History's val_accuracy is measured before the last epoch-end surgery: re-evaluate.
    keras_acc = evaluation.accuracy(model, xt, yt)
    err = 100 * (1 - keras_acc)
    dense_total = args.epochs * memory.mo_bytes(dense_params, 128, x.shape[1])
    print(f"\nDynHP on Fashion-MNIST, {args.epochs} epochs, {seconds:.0f} s (this machine)")
    print("| model | test error % | parameters | model size (KiB) | training memory (KiB, paper accounting) |")
    print("|---|---|---|---|---|")
    print(f"| dense LeNet-300-100 (SP/plain at batch 128, not trained here) | - | {dense_params:,} | "
          f"{memory.kib(memory.network_bytes(dense_params)):.1f} | {memory.kib(dense_total):.1f} |")
    print(f"| DynHP a={args.alpha_bs} | {err:.2f} | {model.count_params_stored():,} | "
          f"{memory.kib(model.network_bytes()):.1f} "
          f"({100 * (model.network_bytes() / memory.network_bytes(dense_params) - 1):+.0f}%) | "
          f"{memory.kib(h['memory_total_bytes'][-1]):.1f} "
          f"({100 * (h['memory_total_bytes'][-1] / dense_total - 1):+.0f}%) |")
    print(f"architecture {model.architecture()}, batch sizes {[int(b) for b in h['batch_size']]}, "
          f"budget {memory.kib(budget):.2f} KiB, peak RSS of this process "
          f"{memory.peak_rss_bytes() / 2**20:.0f} MiB (real, not the paper's accounting)")
    print(f".tflite: {tflite_path} ({os.path.getsize(tflite_path):,} bytes), LiteRT accuracy "
          f"{100 * tflite_acc:.2f}% vs Keras {100 * keras_acc:.2f}%")
    if abs(tflite_acc - keras_acc) > 0.001:
        raise SystemExit("the .tflite accuracy differs from Keras by more than 0.1 points")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
