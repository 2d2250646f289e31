"""Reproduction of the paper's experiments: SP vs HP vs DynHP, alpha_bs sweeps, peers.

The protocol of the paper (Valerio et al., Tables 2-3): LeNet-300-100
(784-300-100-10), lambda = 0.01, gamma = 0.5, SP and HP over the batch sizes
{16, 32, 64, 100, 128, 256, 512}, DynHP over the paper's alpha_bs grid with
initial batch 16 and the budget set to the per-epoch memory of the best SP run,
2000 epochs. Peers on the same data: a plain dense Keras MLP and
`tensorflow-model-optimization` magnitude pruning at the weight sparsity DynHP
reached (run on `tf_keras` in a subprocess).

Every configuration runs in its own directory under `output/<dataset>/<config>/`:

- `state.json` + `ckpt_<epoch>.keras` after every epoch (atomic), so a killed run
  resumes from its last finished epoch;
- `result.json` once finished, so a finished configuration is never re-run.

:func:`run` then writes `results.json` / `results.csv` (every run), `table.md`
(the paper's table format) and PNG plots in the style of the paper's figures.

Example:
    >>> from keras_dynhp.experiments import reproduce
    >>> reproduce.PROFILES["quick"].epochs
    20
    >>> reproduce.run("runs/reproduce", profile="quick")   # doctest: +SKIP
"""

import csv
import dataclasses
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np

from keras_dynhp import memory
from keras_dynhp._io import write_json

PAPER_BATCH_SIZES = (16, 32, 64, 100, 128, 256, 512)
PAPER_ALPHAS = {
    "mnist": (0.971, 0.972, 0.973, 0.974, 0.975),
    "fashion_mnist": tuple(round(0.979 + 0.001 * i, 3) for i in range(11)),
}
LENET_HIDDEN = (300, 100)
LENET_PARAMS = 266_610

# The paper's Tables 2 and 3: error %, model "MBytes", training memory "MBytes".
PAPER_TABLE = {
    "mnist": [
        ("SP (bs 512)", 1.42, 1.041, 5.219), ("HP (bs 100)", 1.41, 0.206, 1.185),
        ("DynHP a=0.971", 1.50, 0.572, 5.165), ("DynHP a=0.972", 1.35, 0.398, 2.736),
        ("DynHP a=0.973", 1.40, 0.205, 1.279), ("DynHP a=0.974", 1.45, 0.217, 1.361),
        ("DynHP a=0.975", 1.43, 0.178, 0.980),
    ],
    "fashion_mnist": [
        ("SP (bs 128)", 9.96, 1.041, 2.866), ("HP (bs 128)", 10.20, 0.236, 1.377),
        ("DynHP a=0.979", 9.97, 0.430, 2.874), ("DynHP a=0.980", 9.64, 0.415, 2.874),
        ("DynHP a=0.981", 9.96, 0.418, 2.874), ("DynHP a=0.982", 9.77, 0.399, 2.874),
        ("DynHP a=0.983", 10.21, 0.407, 2.872), ("DynHP a=0.984", 10.12, 0.405, 2.872),
        ("DynHP a=0.985", 10.06, 0.410, 2.872), ("DynHP a=0.986", 9.93, 0.386, 2.858),
        ("DynHP a=0.987", 10.08, 0.252, 2.573), ("DynHP a=0.988", 10.23, 0.135, 0.829),
        ("DynHP a=0.989", 10.50, 0.124, 0.611),
    ],
}


@dataclasses.dataclass(frozen=True)
class Profile:
    """A grid of configurations.

    Args:
        name: Profile name.
        datasets: Dataset names (see :func:`keras_dynhp.experiments.datasets.load_data`).
        epochs: Epochs of every run.
        sp_batch_sizes: Batch sizes of the SP runs.
        hp_batch_sizes: Batch sizes of the HP runs.
        alphas: Dataset name -> alpha_bs values of the DynHP runs.
        train_subset: Use only this many training images (None: all).
        test_subset: Use only this many test images (None: all).
        peers: Also run the dense Keras MLP and the tfmot peer.
    """

    name: str
    datasets: tuple
    epochs: int
    sp_batch_sizes: tuple
    hp_batch_sizes: tuple
    alphas: dict
    train_subset: int = None
    test_subset: int = None
    peers: bool = True


PROFILES = {
    "paper": Profile("paper", ("mnist", "fashion_mnist"), 2000, PAPER_BATCH_SIZES,
                     PAPER_BATCH_SIZES, PAPER_ALPHAS),
    # Fits a 2-core CPU in about an hour per dataset: the paper's best SP/HP batch
    # sizes (plus the smallest and largest SP), two alpha_bs per dataset, 20 epochs.
    "quick": Profile("quick", ("fashion_mnist", "mnist"), 20, (32, 128, 512), (100, 128),
                     {"mnist": (0.972, 0.975), "fashion_mnist": (0.980, 0.988)}),
    # End-to-end smoke test: seconds, on a subset.
    "tiny": Profile("tiny", ("fashion_mnist",), 2, (128, 256), (128,), {"fashion_mnist": (0.98,)},
                    train_subset=2000, test_subset=500),
}


def config_id(method, value):
    """Directory name of one configuration, e.g. `sp_bs128`, `dynhp_a0.980`."""
    if method == "dynhp":
        return f"dynhp_a{value:.3f}"
    if method in ("sp", "hp", "dense", "tfmot"):
        return f"{method}_bs{int(value)}"
    raise ValueError(f"Unknown method {method!r}.")


def label(method, value):
    """Row label in the paper's style, e.g. "SP (bs 128)", "DynHP a=0.980"."""
    if method == "dynhp":
        return f"DynHP a={value:.3f}"
    names = {"sp": "SP", "hp": "HP", "dense": "Dense Keras MLP", "tfmot": "tfmot magnitude"}
    return f"{names[method]} (bs {int(value)})"


# ------------------------------------------------------------------ file helpers
def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _finished(directory):
    """Creates a configuration's directory; returns its result if it already finished."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "result.json")
    return _read_json(path) if os.path.exists(path) else None


def _test_error(model, xt, yt):
    pred = model.predict(xt, batch_size=1000, verbose=0)
    return 100.0 * float((np.argmax(pred, -1) != yt).mean())


def _tflite_bytes(model, directory):
    from keras_dynhp import export

    path = os.path.join(directory, "model.tflite")
    export.export_tflite(model, path)
    return os.path.getsize(path)


# ------------------------------------------------------------------ one run
def _epoch_checkpoint(directory, state, start_time):
    """A callback that saves model + history after every epoch, atomically."""
    import keras

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                state["history"].setdefault(key, []).append(float(value))
            path = os.path.join(directory, f"ckpt_{epoch + 1}.keras")
            self.model.save(path)
            state["epochs_done"] = epoch + 1
            state["checkpoint"] = os.path.basename(path)
            state["seconds"] = state["seconds_before"] + time.perf_counter() - start_time
            write_json(os.path.join(directory, "state.json"), state)
            for old in glob.glob(os.path.join(directory, "ckpt_*.keras")):
                if os.path.basename(old) != state["checkpoint"]:
                    os.remove(old)

    return Checkpoint()


def run_config(method, value, data, epochs, directory, lam=0.01, gamma=0.5, learning_rate=1e-3,
               budget_bytes=None, initial_batch_size=16, seed=0, verbose=2):
    """Trains one SP / HP / DynHP configuration, resuming it if it was interrupted.

    Args:
        method: "sp", "hp" or "dynhp".
        value: Batch size (sp, hp) or alpha_bs (dynhp).
        data: `((x, y), (xt, yt))`.
        epochs: Total epochs.
        directory: The configuration's directory.
        lam: L0 lambda (float or one per gated layer).
        gamma: Hard-pruning threshold.
        learning_rate: Adam learning rate.
        budget_bytes: DynHP memory budget.
        initial_batch_size: DynHP first batch size.
        seed: Seed of the initialisation and shuffling.
        verbose: Keras verbosity.

    Returns:
        The result dict (also written to `directory/result.json`).
    """
    import keras

    import keras_dynhp

    finished = _finished(directory)
    if finished is not None:
        return finished
    (x, y), (xt, yt) = data
    state_path = os.path.join(directory, "state.json")
    state = _read_json(state_path) if os.path.exists(state_path) else None
    if state and os.path.exists(os.path.join(directory, state["checkpoint"])):
        model = keras.models.load_model(os.path.join(directory, state["checkpoint"]))
        initial_epoch = state["epochs_done"]
        if method == "dynhp":
            initial_batch_size = int(state["history"]["next_batch_size"][-1])
        print(f"[reproduce] resuming {os.path.basename(directory)} at epoch {initial_epoch + 1}",
              flush=True)
    else:
        keras.utils.set_random_seed(seed)
        model = keras_dynhp.build_mlp(list(LENET_HIDDEN), l0_lambda=lam, learning_rate=learning_rate,
                                      seed=seed)
        state = {"history": {}, "epochs_done": 0, "seconds": 0.0}
        initial_epoch = 0
    state["seconds_before"] = state["seconds"]
    start = time.perf_counter()
    kwargs = dict(mode=method, gamma=gamma)
    if method == "dynhp":
        kwargs.update(alpha_bs=value, memory_budget=budget_bytes, initial_batch_size=initial_batch_size)
    else:
        kwargs.update(batch_size=int(value))
    if initial_epoch < epochs:
        model.fit(
            x, y, epochs=epochs, initial_epoch=initial_epoch, validation_data=(xt, yt),
            seed=seed + initial_epoch, verbose=verbose,
            callbacks=[_epoch_checkpoint(directory, state, start)], **kwargs,
        )
    history = state["history"]
    mo = history.get("mo_bytes", [])
    result = {
        "method": method,
        "value": value,
        "config": config_id(method, value),
        "label": label(method, value),
        "epochs": len(mo),
        "error": _test_error(model, xt, yt),
        "params": model.count_params_stored(),
        "architecture": model.architecture(),
        "model_bytes": model.network_bytes(),
        "training_memory_bytes": float(sum(mo)),
        "final_batch_size": int(history["batch_size"][-1]) if mo else None,
        "budget_bytes": budget_bytes if method == "dynhp" else None,
        "tflite_bytes": _tflite_bytes(model, directory),
        "seconds": state["seconds"],
        "history": {
            **history,
            "error": [100.0 * (1.0 - a) for a in history.get("val_accuracy", [])],
            # Running sum over *all* epochs, including those before a resume.
            "memory_total_bytes": np.cumsum(mo).tolist(),
        },
    }
    write_json(os.path.join(directory, "result.json"), result)
    for old in glob.glob(os.path.join(directory, "ckpt_*.keras")):
        os.remove(old)
    return result


def run_dense(data, epochs, batch_size, directory, learning_rate=1e-3, seed=0, verbose=2):
    """Peer: a plain dense Keras MLP 784-300-100-10 (no gates, no pruning).

    Interrupted runs resume through `keras.callbacks.BackupAndRestore`.
    """
    import keras

    finished = _finished(directory)
    if finished is not None:
        return finished
    (x, y), (xt, yt) = data
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((x.shape[1],))]
        + [keras.layers.Dense(u, activation="relu") for u in LENET_HIDDEN]
        + [keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.perf_counter()
    hist = model.fit(
        x, y, batch_size=batch_size, epochs=epochs, validation_data=(xt, yt), verbose=verbose,
        callbacks=[keras.callbacks.BackupAndRestore(os.path.join(directory, "backup"))],
    )
    params = model.count_params()
    mo = memory.mo_bytes(params, batch_size, x.shape[1])
    val_acc = hist.history.get("val_accuracy", [])
    first = epochs - len(val_acc)  # epochs that ran before a resume are not in this History
    result = {
        "method": "dense", "value": batch_size, "config": config_id("dense", batch_size),
        "label": label("dense", batch_size), "epochs": epochs, "error": _test_error(model, xt, yt),
        "params": params, "architecture": [x.shape[1], *LENET_HIDDEN, 10],
        "model_bytes": memory.network_bytes(params), "training_memory_bytes": float(epochs * mo),
        "final_batch_size": batch_size, "budget_bytes": None,
        "tflite_bytes": _tflite_bytes(model, directory),
        "seconds": time.perf_counter() - start,
        "history": {
            "error": [None] * first + [100.0 * (1.0 - a) for a in val_acc],
            "batch_size": [batch_size] * epochs,
            "memory_total_bytes": [mo * (i + 1) for i in range(epochs)],
        },
    }
    write_json(os.path.join(directory, "result.json"), result)
    return result


def run_tfmot(data, epochs, batch_size, sparsity, directory, learning_rate=1e-3, seed=0):
    """Peer: tfmot `prune_low_magnitude` (PolynomialDecay to `sparsity`) on tf_keras.

    Runs `python -m keras_dynhp.experiments.tfmot_peer` in a subprocess with
    `TF_USE_LEGACY_KERAS=1` (tfmot supports Keras 2 only). Needs the `compare`
    extra (`pip install keras_dynhp[compare]`); returns None, with a message,
    when tfmot is not installed.
    """
    finished = _finished(directory)
    if finished is not None:
        return finished
    (x, y), (xt, yt) = data
    npz = os.path.join(directory, "data.npz")
    np.savez(npz, x=x, y=y, xt=xt, yt=yt)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "keras_dynhp.experiments.tfmot_peer", "--data", npz, "--epochs", str(epochs),
           "--batch-size", str(batch_size), "--sparsity", repr(float(sparsity)),
           "--learning-rate", repr(learning_rate), "--seed", str(seed), "--output", directory]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    os.remove(npz)
    if proc.returncode == 3:  # tfmot / tf_keras missing
        print(f"[reproduce] tfmot peer skipped: {proc.stderr.strip().splitlines()[-1]}", flush=True)
        return None
    if proc.returncode != 0:
        raise RuntimeError(f"The tfmot peer failed:\n{proc.stderr[-3000:]}")
    return _read_json(os.path.join(directory, "result.json"))


# ------------------------------------------------------------------ grid
def load(dataset, train_subset=None, test_subset=None, seed=0):
    """Loads a dataset, optionally a seeded random training subset and the first test images."""
    from keras_dynhp.experiments import datasets

    (x, y), (xt, yt) = datasets.load_data(dataset)
    if train_subset:
        idx = np.random.default_rng(seed).permutation(len(x))[:train_subset]
        x, y = x[idx], y[idx]
    if test_subset:
        xt, yt = xt[:test_subset], yt[:test_subset]
    return (x, y), (xt, yt)


def run(output, profile="quick", datasets=None, epochs=None, lam=0.01, gamma=0.5,
        learning_rate=1e-3, budget="best-sp", seed=0, peers=None, verbose=2):
    """Runs (or resumes) a profile and writes results, the Markdown table and plots.

    Args:
        output: Output directory.
        profile: "paper", "quick", "tiny" or a :class:`Profile`.
        datasets: Restrict to these datasets.
        epochs: Override the profile's epochs.
        lam: L0 lambda (the paper's 0.01).
        gamma: Hard-pruning threshold (the paper's 0.5).
        learning_rate: Adam learning rate.
        budget: DynHP budget: "best-sp" (per-epoch memory of the SP run with the
            lowest test error, the paper's rule), "paper" (the paper's budgets:
            MNIST SP bs 512, Fashion-MNIST SP bs 128), or bytes / a string like "1433KiB".
        seed: Seed.
        peers: Run the dense and tfmot peers (default: the profile's setting).
        verbose: Keras verbosity of each run.

    Returns:
        The list of result dicts.
    """
    if isinstance(profile, str) and profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}; expected one of {sorted(PROFILES)}.")
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    epochs = prof.epochs if epochs is None else int(epochs)
    peers = prof.peers if peers is None else peers
    names = prof.datasets if datasets is None else tuple(datasets)
    os.makedirs(output, exist_ok=True)
    write_json(os.path.join(output, "settings.json"), {
        "profile": prof.name, "datasets": names, "epochs": epochs, "lambda": lam, "gamma": gamma,
        "learning_rate": learning_rate, "budget": budget, "seed": seed,
        "sp_batch_sizes": prof.sp_batch_sizes, "hp_batch_sizes": prof.hp_batch_sizes,
        "alphas": {k: prof.alphas.get(k, ()) for k in names},
        "train_subset": prof.train_subset, "test_subset": prof.test_subset,
    })
    results = []
    for dataset in names:
        data = load(dataset, prof.train_subset, prof.test_subset, seed)
        input_dim = data[0][0].shape[1]
        out = os.path.join(output, dataset)
        common = dict(lam=lam, gamma=gamma, learning_rate=learning_rate, seed=seed, verbose=verbose)

        def go(method, value, **kw):
            cid = config_id(method, value)
            print(f"[reproduce] {dataset} {cid} ({epochs} epochs)", flush=True)
            r = run_config(method, value, data, epochs, os.path.join(out, cid), **common, **kw)
            r["dataset"] = dataset
            results.append(r)
            print(f"[reproduce] {dataset} {cid}: error {r['error']:.2f}%, params {r['params']:,}, "
                  f"{r['seconds']:.0f} s", flush=True)
            return r

        sp = [go("sp", b) for b in prof.sp_batch_sizes]
        for b in prof.hp_batch_sizes:
            go("hp", b)
        best_sp = min(sp, key=lambda r: r["error"])
        if budget == "best-sp":
            budget_bytes = memory.mo_bytes(LENET_PARAMS, best_sp["value"], input_dim)
        elif budget == "paper":
            budget_bytes = memory.mo_bytes(LENET_PARAMS, 512 if dataset == "mnist" else 128, input_dim)
        else:
            budget_bytes = memory.parse_bytes(budget)
        dyn = [go("dynhp", a, budget_bytes=budget_bytes) for a in prof.alphas.get(dataset, ())]
        if peers:
            ref_batch = int(best_sp["value"])
            print(f"[reproduce] {dataset} dense peer", flush=True)
            r = run_dense(data, epochs, ref_batch, os.path.join(out, config_id("dense", ref_batch)),
                          learning_rate=learning_rate, seed=seed, verbose=verbose)
            r["dataset"] = dataset
            results.append(r)
            if dyn:
                target = min(dyn, key=lambda r: r["error"])
                sparsity = 1.0 - target["params"] / LENET_PARAMS
                print(f"[reproduce] {dataset} tfmot peer at sparsity {sparsity:.3f} "
                      f"(from {target['label']})", flush=True)
                r = run_tfmot(data, epochs, ref_batch, sparsity,
                              os.path.join(out, config_id("tfmot", ref_batch)),
                              learning_rate=learning_rate, seed=seed)
                if r is not None:
                    r["dataset"] = dataset
                    r["sparsity_from"] = target["label"]
                    results.append(r)
    write_outputs(output, results, epochs)
    return results


# ------------------------------------------------------------------ outputs
def reference(results, dataset):
    """The SP run with the lowest test error of `dataset` (the paper's reference row)."""
    sp = [r for r in results if r["dataset"] == dataset and r["method"] == "sp"]
    return min(sp, key=lambda r: r["error"]) if sp else None


def _pct(value, ref):
    return 100.0 * (value / ref - 1.0) if ref else float("nan")


def table_rows(results):
    """Rows of the paper's table: error, model size, training memory vs the best SP run."""
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        ref = reference(results, dataset)
        for r in (r for r in results if r["dataset"] == dataset):
            err_d = _pct(r["error"], ref["error"]) if ref else float("nan")
            size_d = _pct(r["model_bytes"], ref["model_bytes"]) if ref else float("nan")
            mem_d = _pct(r["training_memory_bytes"], ref["training_memory_bytes"]) if ref else float("nan")
            rows.append({
                "dataset": dataset,
                "method": r["label"] + (" (ref)" if r is ref else ""),
                "epochs": r["epochs"],
                "error": f"{r['error']:.2f} ({err_d:+.0f}%)",
                "model": f"{memory.paper_mbytes(r['model_bytes']):.3f} ({size_d:+.0f}%)",
                "memory": f"{memory.paper_training_mbytes(r['training_memory_bytes']):.4f} ({mem_d:+.0f}%)",
                "params": f"{r['params']:,}" + (
                    f" ({r['nonzero_params']:,} non-zero)" if "nonzero_params" in r else ""),
                "tflite": f"{r['tflite_bytes']:,}" + (
                    f" (gzip {r['tflite_gzip_bytes']:,})" if "tflite_gzip_bytes" in r else ""),
                "batch": r.get("final_batch_size"),
                "seconds": f"{r['seconds']:.0f}",
            })
    return rows


TABLE_COLUMNS = ("dataset", "method", "epochs", "error", "model", "memory", "params", "tflite",
                 "batch", "seconds")
TABLE_HEADERS = ("data", "method", "epochs", "error % (vs SP)", "model MBytes (saving)",
                 "training memory MBytes (saving)", "params stored", ".tflite bytes",
                 "final batch", "wall s")


def markdown(results):
    """The results table in the paper's format, plus the paper's own figures."""
    from keras_dynhp.experiments import report

    text = report.markdown_table(table_rows(results), TABLE_COLUMNS, headers=TABLE_HEADERS)
    text += (
        "\n\nUnits as in the paper: model MBytes = KiB/1000 of 4 x stored weights and biases; "
        "training memory MBytes = KiB/1e6 of the sum over epochs of 4 x (stored parameters + "
        "batch x 784) (`keras_dynhp.memory`). Relative differences are against the SP run with "
        "the lowest test error (ref). The tfmot row stores dense matrices: its parameters and "
        "memory count the dense weights plus the masks it keeps during training.\n"
    )
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        if dataset in PAPER_TABLE:
            rows = [{"method": m, "error": e, "model": s, "memory": t}
                    for m, e, s, t in PAPER_TABLE[dataset]]
            text += (f"\nThe paper's figures for {dataset} (2000 epochs):\n\n"
                     + report.markdown_table(rows, ("method", "error", "model", "memory"),
                                             headers=("method", "error %", "model MBytes",
                                                      "training memory MBytes"))
                     + "\n")
    return text


def write_outputs(output, results, epochs=None):
    """Writes results.json, results.csv, table.md and the plots."""
    write_json(os.path.join(output, "results.json"), results)
    flat_keys = ("dataset", "method", "value", "config", "label", "epochs", "error", "params",
                 "model_bytes", "training_memory_bytes", "tflite_bytes", "final_batch_size",
                 "budget_bytes", "seconds")
    with open(os.path.join(output, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=flat_keys + ("paper_model_mbytes", "paper_training_mbytes"))
        writer.writeheader()
        for r in results:
            row = {k: r.get(k) for k in flat_keys}
            row["paper_model_mbytes"] = memory.paper_mbytes(r["model_bytes"])
            row["paper_training_mbytes"] = memory.paper_training_mbytes(r["training_memory_bytes"])
            writer.writerow(row)
    with open(os.path.join(output, "table.md"), "w") as f:
        f.write(markdown(results))
    plot(output, results)


def plot(output, results):
    """PNG figures in the style of the paper's Fig. 1-7, one set per dataset."""
    from keras_dynhp.experiments import report

    paths = []
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        rs = [r for r in results if r["dataset"] == dataset]
        prefix = os.path.join(output, dataset)
        runs = {r["label"]: r["history"] for r in rs}
        pruned = {r["label"]: r["history"] for r in rs if r["method"] in ("sp", "hp", "dynhp")}
        dyn = {r["label"]: r["history"] for r in rs if r["method"] == "dynhp"}
        for r in rs:  # Fig. 1: active units per layer over epochs, per HP/DynHP run
            if r["method"] in ("hp", "dynhp"):
                p = os.path.join(output, dataset, r["config"], "units.png")
                report.plot_units(r["history"], p, title=f"{dataset}: {r['label']}, units per layer")
                paths.append(p)
        specs = [
            ("memory_total_bytes", runs, "training memory (KiB, running sum, paper accounting)",
             1 / 1024, "memory"),
            ("mo_bytes", pruned, "memory per epoch: network + batch (KiB)", 1 / 1024, "memory_per_epoch"),
            ("error", runs, "test error (%)", None, "error"),
            ("batch_size", dyn, "batch size", None, "batch_size"),
        ]
        for key, group, ylabel, scale, name in specs:
            group = {k: v for k, v in group.items() if v.get(key)}
            if not group:
                continue
            p = f"{prefix}_{name}.png"
            report.plot_runs(group, key, p, ylabel=ylabel, title=dataset, scale=scale,
                             logy=(name == "error"))
            paths.append(p)
    return paths


def main(argv=None):
    """Command line of `examples/reproduce_paper.py`."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    parser.add_argument("--output", default="runs/reproduce")
    parser.add_argument("--datasets", nargs="+", choices=("mnist", "fashion_mnist"))
    parser.add_argument("--epochs", type=int, help="default: the profile's (paper: 2000, quick: 20)")
    parser.add_argument("--lambda", dest="lam", type=float, nargs="+", default=[0.01])
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--budget", default="best-sp",
                        help='"best-sp" (default, the paper\'s rule), "paper", or e.g. "1433KiB"')
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    lam = args.lam[0] if len(args.lam) == 1 else args.lam
    start = time.perf_counter()
    try:
        results = run(args.output, args.profile, args.datasets, args.epochs, lam, args.gamma,
                      args.learning_rate, args.budget, args.seed, None if not args.no_peers else False,
                      args.verbose)
    except (ValueError, FileNotFoundError) as e:
        parser.exit(2, f"reproduce_paper: error: {e}\n")
    print()
    print(open(os.path.join(args.output, "table.md")).read())
    print(f"[reproduce] {len(results)} runs, {time.perf_counter() - start:.0f} s this invocation; "
          f"outputs in {args.output}")
    return results

