"""Variants of DynHP with a model budget at the paper's sizes, selected on validation (issue #25).

Each variant trains LeNet-300-100 on the first 55,000 training images, validates
on the last 5,000 every epoch (the only data any choice looks at), and is
evaluated on the 10,000 test images once, at the end. The training memory is
the paper's accounting (sum over epochs of 4 * (stored weights and biases +
batch * 784)) against SP at the paper's batch (MNIST 512, Fashion-MNIST 128)
over the same epochs. One JSON file per (dataset, variant, epochs, seed) in
`--output`; a finished file is not run again.

    KERAS_BACKEND=jax python benchmarks/tradeoff_variants.py --dataset fashion_mnist \
        --epochs 30 --variants paper_compress100 early --output benchmarks/results/tradeoff
"""

import argparse
import json
import math
import os
import subprocess
import tempfile
import time

import keras
import numpy as np

import keras_dynhp
from keras_dynhp.experiments.datasets import load_data

#: The paper's sizes (its "MBytes" are KiB / 1000), SP's batch and DynHP's alpha per data set.
PAPER = {
    "mnist": {"model_budget": 210 * 1024, "sp_batch": 512, "alpha_bs": 0.973},
    "fashion_mnist": {"model_budget": 140 * 1024, "sp_batch": 128, "alpha_bs": 0.988},
}
LENET = 266_610

#: name -> {"build": build_mlp kwargs, "fit": fit kwargs, "budget": ModelBudget kwargs,
#:          "best": restore the best validation epoch that fits M}. Every setting is spelled
#: out (none is left to the library's defaults), so a result stays what its name says;
#: "defaults" alone takes the library's defaults of the commit its result records.
PAPER_GATES = {"penalty": "louizos", "l0_lambda": 0.01, "droprate_init": 0.5}
SIZE = {"penalty": "size", "l0_lambda": 0.001}
CONSTANT, COSINE = {"learning_rate_decay": None}, {"learning_rate_decay": "cosine"}
VARIANTS = {
    # the compress100 profile as it ran in session 6
    "paper_compress100": {"build": {**SIZE, "droprate_init": 0.5}, "fit": CONSTANT,
                          "budget": {"deadline_fraction": 0.75, "recover": True}},
    "drop02": {"build": {**SIZE, "droprate_init": 0.2}, "fit": CONSTANT,
               "budget": {"deadline_fraction": 0.75, "recover": True}},
    "early": {"build": {**SIZE, "droprate_init": 0.2}, "fit": CONSTANT,
              "budget": {"deadline_fraction": 0.25, "recover": True}},
    "early_cos": {"build": {**SIZE, "droprate_init": 0.2}, "fit": COSINE,
                  "budget": {"deadline_fraction": 0.25, "recover": True}},
    "early_cos_norec": {"build": {**SIZE, "droprate_init": 0.2}, "fit": COSINE,
                        "budget": {"deadline_fraction": 0.25, "recover": False}},
    "early_cos_best": {"build": {**SIZE, "droprate_init": 0.2}, "fit": COSINE,
                       "budget": {"deadline_fraction": 0.25, "recover": True}, "best": True},
    # the library's defaults: build_mlp([300, 100]) and fit(mode="dynhp", memory_budget=C,
    # model_budget=M) with nothing else (C: SP's memory per epoch at the paper's batch)
    "defaults": {"defaults": True},
    # the SP references (the paper's batch, the full network, no model budget)
    "sp_ref": {"mode": "sp", "build": {**SIZE, "droprate_init": 0.2}, "fit": COSINE},
    "sp_ref_paper": {"mode": "sp", "build": PAPER_GATES, "fit": CONSTANT},
    "vearly_cos": {"build": {**SIZE, "droprate_init": 0.2}, "fit": COSINE,
                   "budget": {"deadline_fraction": 0.1, "recover": True}},
    "early_cos_a997": {"build": {**SIZE, "droprate_init": 0.2}, "fit": {**COSINE, "alpha_bs": 0.997},
                       "budget": {"deadline_fraction": 0.25, "recover": True}},
    "mid_cos_a997": {"build": {**SIZE, "droprate_init": 0.2}, "fit": {**COSINE, "alpha_bs": 0.997},
                     "budget": {"deadline_fraction": 0.5, "recover": True}},
    "late_cos_a997": {"build": {**SIZE, "droprate_init": 0.2}, "fit": {**COSINE, "alpha_bs": 0.997},
                      "budget": {"deadline_fraction": 0.75, "recover": True}},
    "early_cos_a997_norec": {"build": {**SIZE, "droprate_init": 0.2}, "fit": {**COSINE, "alpha_bs": 0.997},
                             "budget": {"deadline_fraction": 0.25, "recover": False}},
    "early_cos_a997_norec_drop05": {"build": {**SIZE, "droprate_init": 0.5}, "fit": {**COSINE, "alpha_bs": 0.997},
                                    "budget": {"deadline_fraction": 0.25, "recover": False}},
    "early_cos_a998_norec": {"build": {**SIZE, "droprate_init": 0.2}, "fit": {**COSINE, "alpha_bs": 0.998},
                             "budget": {"deadline_fraction": 0.25, "recover": False}},
    "early_cos_lr2": {"build": {**SIZE, "droprate_init": 0.2, "learning_rate": 2e-3}, "fit": COSINE,
                      "budget": {"deadline_fraction": 0.25, "recover": True}},
    "early_cos_a995": {"build": {**SIZE, "droprate_init": 0.2}, "fit": {**COSINE, "alpha_bs": 0.995},
                       "budget": {"deadline_fraction": 0.25, "recover": True}},
    "early_cos_lam3e-4": {"build": {"penalty": "size", "l0_lambda": 3e-4, "droprate_init": 0.2}, "fit": COSINE,
                          "budget": {"deadline_fraction": 0.25, "recover": True}},
    "early_cos_lam3e-3": {"build": {"penalty": "size", "l0_lambda": 3e-3, "droprate_init": 0.2}, "fit": COSINE,
                          "budget": {"deadline_fraction": 0.25, "recover": True}},
    "early_cos_drop01": {"build": {**SIZE, "droprate_init": 0.1}, "fit": COSINE,
                         "budget": {"deadline_fraction": 0.25, "recover": True}},
    # session 8: regularisation of the small network (the defaults of 5cb1a68 plus one setting)
    "a998_wd10": {"build": {**SIZE, "droprate_init": 0.2, "weight_decay": 10.0}, "fit": {**COSINE, "alpha_bs": 0.998},
                  "budget": {"deadline_fraction": 0.25, "recover": False}},
    "a998_wd50": {"build": {**SIZE, "droprate_init": 0.2, "weight_decay": 50.0}, "fit": {**COSINE, "alpha_bs": 0.998},
                  "budget": {"deadline_fraction": 0.25, "recover": False}},
    # the defaults, keeping the best validation epoch among those within the model budget
    # (keras.callbacks.EarlyStopping(restore_best_weights=True) with a patience of every epoch)
    "defaults_best": {"defaults": True, "restore_best": True},
    # the trade-off figure: the library's defaults at other model budgets (paper "MBytes": KiB / 1000)
    **{f"defaults_{mb:.2f}MB": {"defaults": True, "model_budget": int(mb * 1000 * 1024)}
       for mb in (0.07, 0.14, 0.21, 0.4)},
    # session 9: how the defaults split the size between inputs and hidden units (30 epochs,
    # Fashion): dearer inputs (more pixels pruned, wider hidden layers) or dearer hidden units
    "defaults_inputs3x": {"defaults": True, "build": {"l0_lambda": [0.003, 0.001, 0.001]}},
    "defaults_hidden3x": {"defaults": True, "build": {"l0_lambda": [0.001, 0.003, 0.003]}},
    "a998_adamw01": {"build": {**SIZE, "droprate_init": 0.2}, "adamw": 0.1, "fit": {**COSINE, "alpha_bs": 0.998},
                     "budget": {"deadline_fraction": 0.25, "recover": False}},
}


class _Best(keras.callbacks.Callback):
    """Keeps the epoch with the best validation accuracy among those whose network fits M."""

    def __init__(self, path, max_bytes):
        super().__init__()
        self.path, self.max_bytes, self.best, self.epoch = path, max_bytes, -1.0, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if logs.get("delivered_bytes", math.inf) <= self.max_bytes and logs["val_accuracy"] > self.best:
            self.best, self.epoch = float(logs["val_accuracy"]), epoch
            self.model.save(self.path)


def run(dataset, name, epochs, seed, val, out):
    path = os.path.join(out, f"{dataset}_{name}_e{epochs}_s{seed}.json")
    if os.path.exists(path):
        print(f"{path}: done", flush=True)
        return json.load(open(path))
    spec, paper = VARIANTS[name], PAPER[dataset]
    (x, y), (xt, yt) = load_data(dataset)
    x, y, xv, yv = x[:-val], y[:-val], x[-val:], y[-val:]
    keras.utils.set_random_seed(seed)
    build = dict(spec.get("build", {}))
    if spec.get("adamw"):  # decoupled weight decay on kernels only (not gates, not biases)
        build["optimizer"] = keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=spec["adamw"])
        build["optimizer"].exclude_from_weight_decay(var_names=["log_alpha", "bias"])
    model = keras_dynhp.build_mlp([300, 100], seed=seed, **build)
    sp_epoch = 4 * (LENET + paper["sp_batch"] * 784)
    mode = spec.get("mode", "dynhp")
    budget = None if mode == "sp" else keras_dynhp.ModelBudget(paper["model_budget"], **spec.get("budget", {}))
    if spec.get("defaults"):
        budget = spec.get("model_budget", paper["model_budget"])
    callbacks = []
    tmp = tempfile.mkdtemp()
    best = _Best(os.path.join(tmp, "best.keras"), paper["model_budget"]) if spec.get("best") else None
    max_bytes = spec.get("model_budget", paper["model_budget"])
    callbacks += [best] if best else []
    stop = None
    if spec.get("restore_best"):
        stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=epochs,
                                             restore_best_weights=True)
        callbacks.append(stop)
    fit = ({"batch_size": paper["sp_batch"]} if mode == "sp" else
           {"alpha_bs": paper["alpha_bs"], "memory_budget": sp_epoch}) | spec.get("fit", {})
    if spec.get("defaults"):
        fit = {"memory_budget": sp_epoch}
    start = time.perf_counter()
    if spec.get("defaults"):  # as a user types it: Keras's validation_split takes the last `val` images
        fit["validation_split"] = val / (len(x) + val)
        x, y = np.concatenate([x, xv]), np.concatenate([y, yv])
    else:
        fit["validation_data"] = (xv, yv)
    history = model.fit(x, y, epochs=epochs, mode=mode, model_budget=budget, seed=seed, verbose=2,
                        callbacks=callbacks, **fit)
    seconds = time.perf_counter() - start
    h = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    if best is not None and best.epoch is not None:
        model = keras_dynhp.load_model(best.path)
    compact = keras_dynhp.strip(model)
    error = 100 * (1 - keras_dynhp.accuracy(model, xt, yt))  # the test set, once
    training = sum(h["mo_bytes"])
    record = {
        "dataset": dataset, "variant": name, "spec": spec, "epochs": epochs, "seed": seed,
        "validation": val, "test_error_pct": error, "model_bytes": 4 * compact.count_params(),
        "architecture": model.architecture(), "training_bytes": training,
        "sp_training_bytes": sp_epoch * epochs, "model_budget_bytes": None if mode == "sp" else max_bytes,
        "memory_vs_sp_pct": 100 * (training / (sp_epoch * epochs) - 1),
        "selected_epoch": history.restored_epoch if stop is not None else (None if best is None else best.epoch),
        "best_val_error_pct": 100 * (1 - max(h["val_accuracy"])), "seconds": seconds, "history": h,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None,
        "backend": keras.backend.backend(),
    }
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f)
    print(f"{dataset} {name}: test {error:.2f} %, model {record['model_bytes']:,} B, memory "
          f"{record['memory_vs_sp_pct']:+.1f} % vs SP, final val {100 * (1 - h['val_accuracy'][-1]):.2f} %, "
          f"{seconds:.0f} s", flush=True)
    return record


def table(out, epochs=None):
    """The Markdown table of every result in `out` (optionally of one epoch count), data set by data set."""
    records = [json.load(open(os.path.join(out, name))) for name in sorted(os.listdir(out))
               if name.endswith(".json")]
    records = [r for r in records if epochs is None or r["epochs"] == epochs]
    records.sort(key=lambda r: (r["dataset"], r["epochs"], list(VARIANTS).index(r["variant"])
                                if r["variant"] in VARIANTS else 99, r["seed"]))
    lines = ["| data | variant | epochs | seed | val error % (last or kept epoch) | test error % | model MBytes "
             "| training memory vs SP | final batch | architecture |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        h = r["history"]
        kept = r.get("selected_epoch")
        val = f"{100 * (1 - h['val_accuracy'][-1]):.2f}" if kept is None else (
            f"{100 * (1 - h['val_accuracy'][kept]):.2f} (epoch {kept + 1})")
        lines.append(
            f"| {r['dataset']} | {r['variant']} | {r['epochs']} | {r['seed']} "
            f"| {val} | {r['test_error_pct']:.2f} "
            f"| {r['model_bytes'] / 1024 / 1000:.3f} | {r['memory_vs_sp_pct']:+.1f} % "
            f"| {int(h['batch_size'][-1])} | {'-'.join(map(str, r['architecture']))} |")
    return "\n".join(lines)


#: Issue #25's targets at 100 epochs: model MBytes, test error %, training memory vs SP %.
TARGETS = {"mnist": (0.21, 1.30, -75.0), "fashion_mnist": (0.14, 10.20, -71.0)}


def _mean_spread(values, fmt="{:.2f}"):
    values = list(values)
    return (f"{', '.join(fmt.format(v) for v in values)} (mean {fmt.format(float(np.mean(values)))}, "
            f"spread {fmt.replace('+', '').format(max(values) - min(values))})")


def targets_table(out, variant="defaults", epochs=100):
    """Issue #25's targets against `variant`'s seeds (mean and spread) and the SP references on the same split."""
    records = [json.load(open(os.path.join(out, name))) for name in sorted(os.listdir(out)) if name.endswith(".json")]
    lines = ["| data | target: model / test error / memory vs SP | seeds | DynHP model MBytes | DynHP test error % "
             "| DynHP training memory vs SP % | SP reference test error % | met |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset, (size, error, memory) in TARGETS.items():
        ours = sorted((r for r in records if r["dataset"] == dataset and r["variant"] == variant
                       and r["epochs"] == epochs), key=lambda r: r["seed"])
        sp = sorted((r for r in records if r["dataset"] == dataset and r["variant"] == "sp_ref"
                     and r["epochs"] == epochs), key=lambda r: r["seed"])
        if not ours:
            continue
        sizes = [r["model_bytes"] / 1024 / 1000 for r in ours]
        errors = [r["test_error_pct"] for r in ours]
        memories = [r["memory_vs_sp_pct"] for r in ours]
        met = [name for name, ok in (("size", max(sizes) <= size), ("error", np.mean(errors) <= error),
                                     ("memory", np.mean(memories) <= memory)) if ok]
        lines.append(
            f"| {dataset} | ≤ {size:.2f} / ≤ {error:.2f} % / ≤ {memory:+.0f} % | {', '.join(str(r['seed']) for r in ours)} "
            f"| {_mean_spread(sizes, '{:.3f}')} | {_mean_spread(errors)} | {_mean_spread(memories, '{:+.1f}')} "
            f"| {_mean_spread(r['test_error_pct'] for r in sp) if sp else '-'} | {', '.join(met) or 'none'} |")
    return "\n".join(lines)


def tradeoff_points(out, epochs=30):
    """Per data set, the trade-off runs (`defaults_*MB`, and `defaults` at the paper's size) of `epochs`,
    seed 0 (one point per size, as the page says):
    [(model MBytes, test error %, training memory vs SP %, variant, seed)], smallest model first."""
    points = {}
    for name in sorted(os.listdir(out)):
        if not name.endswith(".json"):
            continue
        r = json.load(open(os.path.join(out, name)))
        if r["epochs"] != epochs or r["seed"] != 0 or not (r["variant"] == "defaults" or r["variant"].endswith("MB")):
            continue
        points.setdefault(r["dataset"], []).append(
            (r["model_bytes"] / 1024 / 1000, r["test_error_pct"], r["memory_vs_sp_pct"], r["variant"], r["seed"]))
    return {k: sorted(v) for k, v in points.items()}


def figure(out, path, epochs=30):
    """Test error and training memory against model size: our runs through the defaults, the paper's rows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from keras_dynhp.experiments.reproduce import PAPER_TABLE

    points = tradeoff_points(out, epochs)
    fig = Figure(figsize=(10, 7.5))
    FigureCanvasAgg(fig)
    for col, dataset in enumerate(("mnist", "fashion_mnist")):
        ours = points.get(dataset, [])
        paper = PAPER_TABLE[dataset]
        sp_memory = paper[0][3]
        dyn = [row for row in paper if row[0].startswith("DynHP")]
        top, bottom = fig.add_subplot(2, 2, col + 1), fig.add_subplot(2, 2, col + 3)
        if ours:
            size, error, mem = (np.array([p[i] for p in ours]) for i in range(3))
            top.plot(size, error, "o-", label=f"keras_dynhp defaults, {epochs} epochs")
            bottom.plot(size, mem, "o-", label=f"keras_dynhp defaults, {epochs} epochs")
        top.plot([r[2] for r in dyn], [r[1] for r in dyn], "s", label="paper DynHP (2000 epochs)")
        top.axhline(paper[0][1], color="grey", ls="--", lw=1, label=f"paper {paper[0][0]}")
        bottom.plot([r[2] for r in dyn], [100 * (r[3] / sp_memory - 1) for r in dyn], "s",
                    label="paper DynHP (2000 epochs)")
        top.set_title(dataset.replace("_", "-").replace("mnist", "MNIST").replace("fashion", "Fashion"))
        top.set_ylabel("test error %")
        bottom.set_ylabel("training memory vs SP %")
        for ax in (top, bottom):
            ax.set_xlabel('model size (paper "MBytes", KiB / 1000)')
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return points


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist", choices=sorted(PAPER))
    parser.add_argument("--epochs", type=int, default=None, help="default 30 (--table: every count)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=sorted(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--validation", type=int, default=5000)
    parser.add_argument("--output", default="benchmarks/results/tradeoff")
    parser.add_argument("--table", action="store_true", help="print the table of the results in --output")
    parser.add_argument("--targets", metavar="VARIANT", nargs="?", const="defaults",
                        help="print issue #25's targets against VARIANT's 100-epoch seeds (default defaults)")
    parser.add_argument("--figure", metavar="PNG", help="draw the trade-off figure of the --epochs (30) runs")
    args = parser.parse_args()
    if args.table:
        print(table(args.output, args.epochs))
        return
    if args.targets:
        print(targets_table(args.output, args.targets))
        return
    if args.figure:
        for dataset, rows in figure(args.output, args.figure, args.epochs or 30).items():
            for size, error, mem, name, seed in rows:
                print(f"{dataset} {name} seed {seed}: {size:.3f} MB, test {error:.2f} %, memory {mem:+.1f} %")
        return
    for seed in args.seeds:
        for name in args.variants:
            run(args.dataset, name, args.epochs or 30, seed, args.validation, args.output)


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    main()
