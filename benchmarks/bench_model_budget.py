"""DynHP with a model-size budget against a dense Keras MLP trained as long (Fashion-MNIST).

The issue's 20-epoch target: `build_mlp([300, 100])` + `fit(epochs=20, mode="dynhp",
memory_budget="1433KiB", model_budget="250KB")` delivers <= 250 KB within one
point of the dense baseline's test error. Runs, one after the other (never two
at once): the dense baseline, then each DynHP variant; prints one row each.

    KERAS_BACKEND=jax python benchmarks/bench_model_budget.py --epochs 20
"""

import argparse
import time

import keras

import keras_dynhp
from keras_dynhp.experiments import harness
from keras_dynhp.experiments.datasets import load_data

VARIANTS = {
    "default build_mlp (louizos, l=0.01, p0=0.5)": {},
    "size penalty, l=0.001, p0=0.2": {"penalty": "size", "l0_lambda": 0.001, "droprate_init": 0.2},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--memory-budget", default="1433KiB")
    parser.add_argument("--model-budget", default="250KB")
    parser.add_argument("--alpha-bs", type=float, default=0.98)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    (x, y), (xt, yt) = load_data(args.dataset)
    rows = []
    keras.utils.set_random_seed(args.seed)
    dense = harness.build_dense([300, 100], 784, 10, 1e-3, args.seed)
    start = time.perf_counter()
    dense.fit(x, y, batch_size=128, epochs=args.epochs, verbose=0)
    rows.append(("dense Keras MLP, batch 128", 100 * (1 - keras_dynhp.accuracy(dense, xt, yt)),
                 4 * dense.count_params(), None, time.perf_counter() - start))
    print(f"{rows[-1][0]}: error {rows[-1][1]:.2f}%", flush=True)
    for name, kwargs in VARIANTS.items():
        model = keras_dynhp.build_mlp([300, 100], seed=args.seed, **kwargs)
        start = time.perf_counter()
        model.fit(x, y, epochs=args.epochs, mode="dynhp", alpha_bs=args.alpha_bs,
                  memory_budget=args.memory_budget, model_budget=args.model_budget, verbose=0,
                  seed=args.seed)
        seconds = time.perf_counter() - start
        compact = keras_dynhp.strip(model)
        rows.append((f"DynHP + model budget, {name}", 100 * (1 - keras_dynhp.accuracy(model, xt, yt)),
                     4 * compact.count_params(), model.architecture(), seconds))
        print(f"{rows[-1][0]}: error {rows[-1][1]:.2f}%", flush=True)
    base = rows[0][1]
    print(f"\n{args.dataset}, {args.epochs} epochs, seed {args.seed}, model budget {args.model_budget}")
    print(f"{'run':<62} {'error %':>7} {'vs dense':>8} {'KB':>7} {'s':>6}  architecture")
    for name, error, size, arch, seconds in rows:
        print(f"{name:<62} {error:>7.2f} {error - base:>+8.2f} {size / 1000:>7.1f} {seconds:>6.0f}  {arch or ''}")


if __name__ == "__main__":
    main()
