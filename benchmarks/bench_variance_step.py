"""Step cost of the gradient-variance estimator vs a plain training step.

Times epochs of `fit` on Fashion-MNIST with mode="hp" (no variance) and with the
DynHP train step measuring ||S||_1 every step (and every k steps), at a fixed
batch size (a huge budget and alpha_bs close to 1 keep the batch size fixed).
The variants' epochs are interleaved round by round and the *minimum* epoch time
of each is kept, so that load from other processes affects them alike.

    python benchmarks/bench_variance_step.py --batch-sizes 16 256 --every 1 10
"""

import argparse
import time

import keras_dynhp
from keras_dynhp.experiments.datasets import load_data


def timed(fits, rounds):
    """Minimum epoch time of each fit, interleaving them `rounds` times after a warm-up."""
    best = [float("inf")] * len(fits)
    for r in range(rounds + 1):
        for i, fit in enumerate(fits):
            t = time.perf_counter()
            fit()
            if r:  # round 0 traces the functions
                best[i] = min(best[i], time.perf_counter() - t)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--every", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--epochs", type=int, default=3, help="timed rounds per variant")
    parser.add_argument("--examples", type=int, default=20000)
    args = parser.parse_args()
    (x, y), _ = load_data("fashion_mnist")
    x, y = x[: args.examples], y[: args.examples]
    print(f"{'batch':>6} {'plain ms/step':>13} " + " ".join(f"{'every ' + str(k):>10}" for k in args.every))
    for b in args.batch_sizes:
        steps = -(-len(x) // b)
        base = keras_dynhp.build_mlp([300, 100], seed=0, l0_lambda=0.0)
        fits = [lambda: base.fit(x, y, batch_size=b, epochs=1, mode="hp", gamma=0.0, verbose=0)]
        for k in args.every:
            model = keras_dynhp.build_mlp([300, 100], seed=0, l0_lambda=0.0)
            fits.append(lambda model=model, k=k: model.fit(
                x, y, epochs=1, mode="dynhp", alpha_bs=0.999999999, gamma=0.0,
                memory_budget="1GiB", initial_batch_size=b, variance_every=k, verbose=0))
        t0, *ts = timed(fits, args.epochs)
        cells = [f"{1000 * t / steps:>6.2f} ({100 * (t / t0 - 1):+.0f}%)" for t in ts]
        print(f"{b:>6} {1000 * t0 / steps:>13.2f} " + " ".join(f"{c:>10}" for c in cells), flush=True)

if __name__ == "__main__":
    main()
