"""Per-epoch time of HP vs SP in one run, and the cost of a surgery in milliseconds.

    python benchmarks/bench_hp_surgery.py --epochs 8 --batch-size 100
"""

import argparse
import time

import numpy as np

import keras_dynhp
from keras_dynhp.experiments.datasets import load_data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lambda", dest="lam", type=float, nargs="+", default=[0.05, 0.05, 0.5])
    args = parser.parse_args()
    (x, y), _ = load_data("fashion_mnist")
    rows = {}
    for mode in ("sp", "hp"):
        model = keras_dynhp.build_mlp([300, 100], seed=0, l0_lambda=args.lam, droprate_init=0.7,
                                      learning_rate=3e-3)
        times, hist = [], None
        for epoch in range(args.epochs):
            start = time.perf_counter()
            hist = model.fit(x, y, batch_size=args.batch_size, epochs=epoch + 1, initial_epoch=epoch,
                             mode=mode, verbose=0, seed=0)
            times.append(time.perf_counter() - start)
            rows.setdefault(epoch, {})[mode] = (times[-1], hist.history["surgery_ms"][-1],
                                                model.architecture())
    print(f"{'epoch':>5} {'SP s':>6} {'HP s':>6} {'surgery ms':>10}  HP architecture")
    for epoch, r in rows.items():
        print(f"{epoch:>5} {r['sp'][0]:>6.2f} {r['hp'][0]:>6.2f} {r['hp'][1]:>10.1f}  {r['hp'][2]}")
    surg = [r["hp"][1] for r in rows.values() if r["hp"][2] != rows[0]["hp"][2] or r["hp"][1] > 5]
    if surg:
        print(f"surgery: median {np.median(surg):.1f} ms over {len(surg)} pruning epochs")


if __name__ == "__main__":
    main()
