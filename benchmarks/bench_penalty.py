"""Which units each L0 weighting prunes: Louizos (fan-out) vs size penalty vs size + model budget.

Trains LeNet-300-100 once per variant, the variants interleaved epoch by epoch
in one process (same data, seed and mode), and prints the units each layer
kept and lost, the stored parameters and the test error:

    KERAS_BACKEND=jax python benchmarks/bench_penalty.py --dataset fashion_mnist \\
        --mode hp --epochs 20 --model-budget 250KB
"""

import argparse
import time

import keras_dynhp
from keras_dynhp.experiments.datasets import load_data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--mode", choices=("sp", "hp", "dynhp"), default="hp")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100, help="sp / hp batch size")
    parser.add_argument("--memory-budget", default="1433KiB", help="dynhp's budget C")
    parser.add_argument("--alpha-bs", type=float, default=0.98)
    parser.add_argument("--lambda", dest="lam", type=float, default=0.01, help="Louizos and size lambda")
    parser.add_argument("--budget-lambda", type=float, default=0.001, help="size lambda beside the budget")
    parser.add_argument("--model-budget", default="250KB")
    args = parser.parse_args()
    (x, y), (xt, yt) = load_data(args.dataset)
    variants = {
        f"louizos l={args.lam:g}": ("louizos", args.lam, None),
        f"size l={args.lam:g}": ("size", args.lam, None),
        f"size l={args.budget_lambda:g} + budget {args.model_budget}": ("size", args.budget_lambda,
                                                                          args.model_budget),
    }
    runs = {}
    for name, (penalty, lam, budget) in variants.items():
        model = keras_dynhp.build_mlp([300, 100], seed=0, l0_lambda=lam, penalty=penalty)
        policy = None
        if args.mode == "dynhp":
            policy = keras_dynhp.DynamicBatchSize(args.alpha_bs, args.memory_budget)
        if budget is not None:  # fit runs one epoch at a time here: the deadline is given
            budget = keras_dynhp.ModelBudget(budget, deadline=max(-(-3 * args.epochs // 4) - 1, 0))
        runs[name] = {"model": model, "budget": budget,
                      "policy": policy, "seconds": 0.0}
    for epoch in range(args.epochs):  # interleaved: one epoch of each variant in turn
        for name, run in runs.items():
            kwargs = {"batch_policy": run["policy"]} if args.mode == "dynhp" else {
                "batch_size": args.batch_size}
            start = time.perf_counter()
            history = run["model"].fit(x, y, epochs=epoch + 1, initial_epoch=epoch, mode=args.mode,
                                       model_budget=run["budget"], verbose=0, seed=0, **kwargs)
            run["seconds"] += time.perf_counter() - start
            run["last"] = {k: v[-1] for k, v in history.history.items()}
        print(f"epoch {epoch + 1}: " + "; ".join(
            f"{name}: {run['model'].architecture()}" for name, run in runs.items()), flush=True)
    start_units = [784, 300, 100]
    print(f"\n{args.dataset}, {args.mode}, {args.epochs} epochs, LeNet-300-100, seed 0")
    print(f"{'variant':<34} {'units kept':<18} {'removed per layer':<18} {'params':>8} "
          f"{'KB':>7} {'error %':>7} {'s':>6}")
    for name, run in runs.items():
        model = run["model"]
        units = model.units()
        removed = [a - b for a, b in zip(start_units, units)]
        error = 100.0 * (1.0 - keras_dynhp.accuracy(model, xt, yt))
        print(f"{name:<34} {str(units):<18} {str(removed):<18} {model.count_params_stored():>8,} "
              f"{model.delivered_bytes() / 1000:>7.1f} {error:>7.2f} {run['seconds']:>6.0f}")


if __name__ == "__main__":
    main()
