"""LeNet-5-Caffe (20-50-800-500) on MNIST / Fashion-MNIST: dense Keras, SP, HP and DynHP.

    python benchmarks/run_lenet5.py --dataset mnist --variants dynhp dense --epochs 30
    python benchmarks/run_lenet5.py --dataset mnist --table          # the table of what ran

Each variant trains on all 60,000 training images and is tested on the
10,000 test images after every epoch. The gated variants use the size penalty
(eq. 11, lambda 0.001), per-example gates and a model budget (default 340 KB:
at most 85,000 weights and biases, 80.3 % fewer than the dense LeNet-5's
431,080); `dynhp` grows its batch from 64 under a training budget of the dense
network plus one batch of 128 (paper accounting). `dense` is a plain Keras
LeNet-5 (Conv2D/MaxPooling2D/Dense) at batch 128.

Nothing is lost on interruption: after every epoch the model is saved to
`runs/lenet5/<dataset>-<variant>/model.keras` with its history, and running
the same command again resumes from there. Progress is printed per epoch.
Seed 0 throughout.
"""

import argparse
import json
import os
import sys
import time
import warnings

VARIANTS = ("dense", "sp", "hp", "dynhp")
DENSE_PARAMS = 431_080
BYTES_PER_EXAMPLE = 4 * 28 * 28


def _data(dataset):
    from keras_dynhp.experiments.datasets import load_data

    (x, y), (xt, yt) = load_data(dataset, flatten=False)
    return x, y, xt, yt


def _dense_lenet5(seed):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(20, 5, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(50, 5, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(500, activation="relu"), keras.layers.Dense(10, activation="softmax"),
    ], name="dense_lenet5")
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def run(dataset, variant, epochs, model_budget, out_dir, seed=0):
    """Trains one variant to `epochs`, resuming from its directory; returns its history (a dict)."""
    import keras

    import keras_dynhp

    path = os.path.join(out_dir, f"{dataset}-{variant}")
    os.makedirs(path, exist_ok=True)
    model_path, history_path = os.path.join(path, "model.keras"), os.path.join(path, "history.json")
    history = {}
    if os.path.exists(model_path) and os.path.exists(history_path):
        with open(history_path) as f:
            history = json.load(f)
    done = len(history.get("test_error", []))
    if done >= epochs:
        return history
    x, y, xt, yt = _data(dataset)
    if done:
        model = keras_dynhp.load_model(model_path) if variant != "dense" else keras.saving.load_model(model_path)
        print(f"{dataset}-{variant}: resuming after epoch {done}", flush=True)
    elif variant == "dense":
        model = _dense_lenet5(seed)
    else:
        keras.utils.set_random_seed(seed)
        model = keras_dynhp.build_lenet5(seed=seed, penalty="size", l0_lambda=0.001)
    budget_bytes = 4 * DENSE_PARAMS + 128 * BYTES_PER_EXAMPLE
    for epoch in range(done, epochs):
        start = time.perf_counter()
        if variant == "dense":
            logs = model.fit(x, y, batch_size=128, epochs=epoch + 1, initial_epoch=epoch, verbose=0,
                             shuffle=True).history
            params, batch = DENSE_PARAMS, 128
        else:
            kwargs = dict(mode=variant, epochs=epoch + 1, initial_epoch=epoch, verbose=0, seed=seed,
                          model_budget=keras_dynhp.ModelBudget(model_budget, deadline=int(0.75 * epochs) - 1))
            if variant == "dynhp":
                kwargs.update(memory_budget=budget_bytes, initial_batch_size=64, alpha_bs=0.98)
            else:
                kwargs.update(batch_size=128)
            logs = model.fit(x, y, **kwargs).history
            params = int(logs["params"][-1])
            batch = int(logs["batch_size"][-1])
        seconds = time.perf_counter() - start
        loss, accuracy = model.evaluate(xt, yt, batch_size=500, verbose=0)[:2]
        row = {"epoch": epoch + 1, "test_error": 100.0 * (1.0 - accuracy), "test_loss": loss,
               "train_loss": float(logs["loss"][-1]), "seconds": seconds, "params": params, "batch_size": batch}
        if variant != "dense":
            row["widths"] = model.layer_widths()
            row["delivered_bytes"] = int(logs["delivered_bytes"][-1])
            row["mo_bytes"] = int(logs["mo_bytes"][-1])
        for key, value in row.items():
            history.setdefault(key, []).append(value)
        model.save(model_path)
        with open(history_path + ".tmp", "w") as f:
            json.dump(history, f)
        os.replace(history_path + ".tmp", history_path)
        print(f"{dataset}-{variant} epoch {epoch + 1}/{epochs}: test error {row['test_error']:.2f} %, "
              f"params {params:,}, batch {batch}, {seconds:.0f} s"
              + (f", widths {row['widths']}, delivered {row['delivered_bytes']:,} B" if variant != "dense" else ""),
              flush=True)
    return history


def table(dataset, out_dir):
    """A Markdown table of the variants that ran (their last epoch; widths as trained, physically)."""
    lines = ["| variant | epochs | test error % | compact params | fewer | widths | batch |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for variant in VARIANTS:
        path = os.path.join(out_dir, f"{dataset}-{variant}", "history.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            h = json.load(f)
        # What the exported model stores: SP trains at full size and delivers the open gates.
        params = h["delivered_bytes"][-1] // 4 if "delivered_bytes" in h else h["params"][-1]
        widths = h.get("widths", [[[1, 20], [20, 50], [800, 500], [500, 10]]])[-1]
        louizos = f"{widths[1][0]}-{widths[1][1]}-{widths[2][0]}-{widths[3][0]}"
        lines.append(f"| {variant} | {len(h['test_error'])} | {h['test_error'][-1]:.2f} | {params:,} | "
                     f"{100 * (1 - params / DENSE_PARAMS):.1f} % | {louizos} | {h['batch_size'][-1]} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist"))
    parser.add_argument("--variants", nargs="+", default=["dynhp", "dense"], choices=VARIANTS)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--model-budget", default="340KB")
    parser.add_argument("--output", default="runs/lenet5")
    parser.add_argument("--table", action="store_true", help="print the table of finished runs and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.dataset, args.output))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # One fit per epoch: each warns that the budget's deadline is after its last epoch.
    warnings.filterwarnings("ignore", message="The network .* does not fit the model budget")
    for variant in args.variants:
        run(args.dataset, variant, args.epochs, args.model_budget, args.output)
    print(table(args.dataset, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
