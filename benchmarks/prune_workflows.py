"""A user's own Keras model halved with `prune()`, against the same model trained plainly (issue #25).

Two models, as a user brings them: keras.io's "simple MNIST convnet"
(Conv2D 32 - pool - Conv2D 64 - pool - Flatten - Dropout 0.5 - Dense 10) and a
Dense(512)-Dropout-Dense(512)-Dropout-Dense(10) MLP. Two workflows, each with
the library's defaults and a model budget of half the model's parameters:

- fine-tune: train the plain model 2 epochs (batch 128), `prune()` it, fine-tune
  2 epochs with `mode="hp"` (batch 128); against the plain model trained 2 + 2
  epochs;
- from scratch: `prune()` the untrained model, `mode="dynhp"` 3 epochs (memory
  budget: the plain model at batch 128, paper accounting); against the plain
  model trained 3 epochs at batch 16 (DynHP's first batch).

MNIST, the first 8,000 training images; test accuracy on the first 2,000 test
images, once per model at the end (nothing is selected). Results go to
`benchmarks/results/prune_workflows.json`; `--table` prints the Markdown table.

    KERAS_BACKEND=jax python benchmarks/prune_workflows.py --seeds 0 1 2
"""

import argparse
import json
import os
import subprocess
import time

import keras
import numpy as np

import keras_dynhp
from keras_dynhp.experiments.datasets import load_data

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "prune_workflows.json")


def convnet(seed):
    init = lambda i: keras.initializers.GlorotUniform(seed=seed * 10 + i)
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu", kernel_initializer=init(0)),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu", kernel_initializer=init(1)),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5, seed=seed),
        keras.layers.Dense(10, activation="softmax", kernel_initializer=init(2)),
    ], name="convnet")


def mlp(seed):
    init = lambda i: keras.initializers.GlorotUniform(seed=seed * 10 + i)
    return keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(512, activation="relu", kernel_initializer=init(0)),
        keras.layers.Dropout(0.2, seed=seed),
        keras.layers.Dense(512, activation="relu", kernel_initializer=init(1)),
        keras.layers.Dropout(0.2, seed=seed + 1),
        keras.layers.Dense(10, activation="softmax", kernel_initializer=init(2)),
    ], name="mlp")


MODELS = {"convnet": (convnet, False), "mlp": (mlp, True)}


def compiled(model):
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(keras.ops.convert_to_numpy(model.predict(x, verbose=0)), -1) == y))


def run(name, seed, n_train=8000, n_test=2000):
    make, flat = MODELS[name]
    (x, y), (xt, yt) = load_data("mnist", flatten=flat)
    x, y, xt, yt = x[:n_train], y[:n_train], xt[:n_test], yt[:n_test]
    rows = {}
    keras.utils.set_random_seed(seed)
    plain = compiled(make(seed))
    params = plain.count_params()
    half = 4 * params // 2
    start = time.perf_counter()
    plain.fit(x, y, epochs=2, batch_size=128, verbose=0)
    trained2 = accuracy(plain, xt, yt)
    pruned = keras_dynhp.prune(plain, seed=seed)  # converts the trained weights
    converted = accuracy(pruned, xt, yt)
    plain.fit(x, y, epochs=2, batch_size=128, verbose=0)
    rows["plain 2+2 epochs (bs 128)"] = {"accuracy": accuracy(plain, xt, yt), "params": params}
    pruned.fit(x, y, epochs=2, batch_size=128, mode="hp", model_budget=half, verbose=0, seed=seed)
    compact = keras_dynhp.strip(pruned)
    rows["fine-tune: 2 epochs, prune(), hp 2 epochs (bs 128)"] = {
        "accuracy": accuracy(pruned, xt, yt), "params": compact.count_params(),
        "after_2_epochs": trained2, "right_after_prune": converted}
    keras.utils.set_random_seed(seed)
    plain16 = compiled(make(seed))
    plain16.fit(x, y, epochs=3, batch_size=16, verbose=0)
    rows["plain 3 epochs (bs 16)"] = {"accuracy": accuracy(plain16, xt, yt), "params": params}
    keras.utils.set_random_seed(seed)
    scratch = keras_dynhp.prune(compiled(make(seed)), seed=seed)
    memory = 4 * (params + 128 * 784)
    h = scratch.fit(x, y, epochs=3, mode="dynhp", memory_budget=memory, model_budget=half, verbose=0,
                    seed=seed)
    rows["from scratch: prune(), dynhp 3 epochs"] = {
        "accuracy": accuracy(scratch, xt, yt), "params": keras_dynhp.strip(scratch).count_params(),
        "final_batch": int(h.history["batch_size"][-1])}
    return {"model": name, "seed": seed, "rows": rows, "model_budget_bytes": half, "params": params,
            "seconds": time.perf_counter() - start, "backend": keras.backend.backend(),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None}


def table(results):
    """Markdown: per model and workflow, the accuracy of each seed and the gap to the plain model."""
    lines = ["| model | workflow | test accuracy % (seeds) | mean | plain model, same budget of epochs "
             "| gap (points) | parameters |", "|---|---|---|---:|---|---:|---:|"]
    pairs = [("fine-tune: 2 epochs, prune(), hp 2 epochs (bs 128)", "plain 2+2 epochs (bs 128)"),
             ("from scratch: prune(), dynhp 3 epochs", "plain 3 epochs (bs 16)")]
    for name in MODELS:
        runs = sorted((r for r in results if r["model"] == name), key=lambda r: r["seed"])
        if not runs:
            continue
        for ours, theirs in pairs:
            a = [100 * r["rows"][ours]["accuracy"] for r in runs]
            b = [100 * r["rows"][theirs]["accuracy"] for r in runs]
            p = [r["rows"][ours]["params"] for r in runs]
            lines.append(
                f"| {name} | {ours} | {', '.join(f'{v:.1f}' for v in a)} | {np.mean(a):.1f} "
                f"| {theirs}: {', '.join(f'{v:.1f}' for v in b)} (mean {np.mean(b):.1f}) "
                f"| {np.mean(a) - np.mean(b):+.1f} | {min(p):,}-{max(p):,} of {runs[0]['params']:,} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--output", default=OUT)
    parser.add_argument("--table", action="store_true", help="print the table of --output")
    args = parser.parse_args()
    results = json.load(open(args.output)) if os.path.exists(args.output) else []
    if args.table:
        print(table(results))
        return
    for seed in args.seeds:
        for name in args.models:
            if any(r["model"] == name and r["seed"] == seed for r in results):
                print(f"{name} seed {seed}: done", flush=True)
                continue
            record = run(name, seed)
            results.append(record)
            os.makedirs(os.path.dirname(args.output), exist_ok=True)
            with open(args.output + ".tmp", "w") as f:
                json.dump(results, f, indent=1)
            os.replace(args.output + ".tmp", args.output)
            print(name, seed, {k: round(100 * v["accuracy"], 2) for k, v in record["rows"].items()}, flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
