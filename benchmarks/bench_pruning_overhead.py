"""Wall time of a run that prunes every epoch against the same run without pruning (#26).

    KERAS_BACKEND=jax python benchmarks/bench_pruning_overhead.py --epochs 20 --batch-size 100

LeNet-300-100 on Fashion-MNIST (all 60,000 training images), `build_mlp` defaults:
`mode="hp"` with a 250 KB model budget (the layers shrink at every epoch end until
the budget's deadline, then hard pruning goes on where gates close) against
`mode="sp"` at the same batch size, one after the other, each in this process
after one untimed warm-up epoch of its own model. Prints both wall times, the
ratio (the issue's target: <= 1.15) and the epochs whose shapes changed.
"""

import argparse
import time

import keras_dynhp
from keras_dynhp.experiments.datasets import load_data


def _run(x, y, mode, epochs, batch_size, **kwargs):
    model = keras_dynhp.build_mlp([300, 100], seed=0)
    start = time.perf_counter()
    history = model.fit(x, y, mode=mode, epochs=epochs, batch_size=batch_size, verbose=0, seed=0, **kwargs)
    seconds = time.perf_counter() - start
    units = [tuple(int(history.history[f"units_{i}"][e]) for i in range(3)) for e in range(epochs)]
    return seconds, sum(1 for a, b in zip(units, units[1:]) if a != b), units[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--model-budget", default="250KB")
    args = parser.parse_args()
    (x, y), _ = load_data("fashion_mnist", as_uint8=True)
    _run(x, y, "sp", 1, args.batch_size)  # warm-up: imports, first compilations
    sp, _, _ = _run(x, y, "sp", args.epochs, args.batch_size)
    hp, changes, last = _run(x, y, "hp", args.epochs, args.batch_size, model_budget=args.model_budget)
    print(f"{args.epochs} epochs at batch {args.batch_size}: SP {sp:.1f} s, HP with a {args.model_budget} "
          f"model budget {hp:.1f} s ({changes} epochs changed the shapes, ending at units {list(last)}): "
          f"ratio {hp / sp:.2f}")


if __name__ == "__main__":
    main()
