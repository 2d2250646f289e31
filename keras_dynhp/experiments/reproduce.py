"""Reproduction of the paper's experiments: SP vs HP vs DynHP, alpha_bs sweeps, peers.

The protocol of the paper (Valerio et al., Tables 2-3): LeNet-300-100
(784-300-100-10), lambda = 0.01, gamma = 0.5, SP and HP over the batch sizes
{16, 32, 64, 100, 128, 256, 512}, DynHP over the paper's alpha_bs grid with
initial batch 16 and the budget set to the per-epoch memory of the best SP run,
2000 epochs. Peers on the same data: a plain dense Keras MLP and
`tensorflow-model-optimization` magnitude pruning at the weight sparsity DynHP
reached (run on `tf_keras` in a subprocess).

Every configuration is one :func:`keras_dynhp.experiments.harness.run_config`
in its own directory under `output/<dataset>/<config>/`, so a killed run resumes
from its last finished epoch and a finished configuration is never re-run.
:func:`run` then writes `results.json` (every result record) / `results.csv`
(their scalar keys), `table.md` (the paper's table format) and PNG plots in the
style of the paper's figures. From the command line: `keras-dynhp reproduce`.

Example:
    >>> from keras_dynhp.experiments import reproduce
    >>> reproduce.PROFILES["quick"].epochs
    20
    >>> reproduce.run("runs/reproduce", profile="quick")   # doctest: +SKIP
"""

import dataclasses
import os

import numpy as np

from keras_dynhp import memory
from keras_dynhp._io import write_bytes, write_csv, write_json
from keras_dynhp.experiments import harness
from keras_dynhp.experiments.harness import LENET_HIDDEN, LENET_PARAMS  # noqa: F401

PAPER_BATCH_SIZES = (16, 32, 64, 100, 128, 256, 512)
PAPER_ALPHAS = {
    "mnist": (0.971, 0.972, 0.973, 0.974, 0.975),
    "fashion_mnist": tuple(round(0.979 + 0.001 * i, 3) for i in range(11)),
}
# The batch size of the SP run whose per-epoch memory is the paper's DynHP budget.
PAPER_BUDGET_BATCH = {"mnist": 512, "fashion_mnist": 128}

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
        sp_batch_sizes: Batch sizes of the SP runs (or dataset name -> batch sizes).
        hp_batch_sizes: Batch sizes of the HP runs (or dataset name -> batch sizes).
        alphas: Dataset name -> alpha_bs values of the DynHP runs.
        train_subset: Use only this many training images (None: all).
        test_subset: Use only this many test images (None: all).
        peers: Also run the dense Keras MLP and the tfmot peer.
        penalty: L0 penalty weighting of every gated run ("louizos", the
            paper's, or "size"; :mod:`keras_dynhp.penalty`).
        lam: L0 lambda of the profile (None: `run`'s `lam`).
        model_budgets: Dataset name -> model-size budget (e.g. "215040B") of
            extra DynHP runs with a model budget (:mod:`keras_dynhp.budget`),
            run right after SP, one per value of `budget_alphas`.
        budget_alphas: Dataset name -> alpha_bs values of those runs.
        validation: None (the paper's protocol: the test set is shown every
            epoch, and the reference SP run is the one with the lowest *test*
            error, as the paper chose) or a number of training images held
            out for validation: every choice (the reference SP run, the
            "best-sp" budget) is then made on their error, and the test set
            is evaluated once per run, at the end.
        droprate_init: Initial gate drop rate of the gated runs (None: the
            harness's 0.5, the paper's).
        learning_rate_decay: `fit`'s `learning_rate_decay` of the gated runs
            (None: the paper's constant rate; "cosine": the library's default).
        budget_deadline: The model budget's deadline as a fraction of the
            epochs, and `budget_recover` its recovery epochs (None: the
            library's defaults, :class:`keras_dynhp.ModelBudget`).
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
    penalty: str = "louizos"
    lam: float = None
    model_budgets: dict = None
    budget_alphas: dict = None
    validation: int = None
    droprate_init: float = None
    learning_rate_decay: str = None
    budget_deadline: float = None
    budget_recover: bool = None

    def batch_sizes(self, method, dataset):
        """The SP ("sp") or HP ("hp") batch sizes of `dataset`."""
        sizes = self.sp_batch_sizes if method == "sp" else self.hp_batch_sizes
        return tuple(sizes.get(dataset, ())) if isinstance(sizes, dict) else tuple(sizes)


PROFILES = {
    "paper": Profile("paper", ("mnist", "fashion_mnist"), 2000, PAPER_BATCH_SIZES,
                     PAPER_BATCH_SIZES, PAPER_ALPHAS),
    # Fits a 2-core CPU in about an hour per dataset: the paper's best SP/HP batch
    # sizes (plus the smallest and largest SP), two alpha_bs per dataset, 20 epochs.
    "quick": Profile("quick", ("fashion_mnist", "mnist"), 20, (32, 128, 512), (100, 128),
                     {"mnist": (0.972, 0.975), "fashion_mnist": (0.980, 0.988)}),
    # Compression in 100 epochs: the paper's SP batch as reference, HP, DynHP at the paper's
    # -80% / -87% alpha_bs, and DynHP with a model budget at the paper's sizes (MNIST 0.21,
    # Fashion 0.14 "MBytes" = KiB / 1000), all with the size penalty (eq. 11). Runs in the
    # order SP, DynHP + budget, HP, DynHP, so a partial grid holds the headline rows first.
    "compress100": Profile(
        "compress100", ("mnist", "fashion_mnist"), 100,
        {"mnist": (512,), "fashion_mnist": (128,)}, {"mnist": (100,), "fashion_mnist": (128,)},
        {"mnist": (0.973,), "fashion_mnist": (0.988,)}, peers=False,
        penalty="size", lam=0.001,
        model_budgets={"mnist": 210 * 1024, "fashion_mnist": 140 * 1024},
        budget_alphas={"mnist": (0.973,), "fashion_mnist": (0.988,)},
        budget_deadline=0.75, budget_recover=True),
    # The paper's sizes in 30 epochs with the library's defaults (size penalty, lambda 0.001,
    # drop rate 0.2, cosine rate, the model budget at a quarter of the epochs, alpha 0.998),
    # SP at the paper's batch as the reference, validated on the last 5,000 training images
    # (docs/reproduction.md "The paper's sizes in 100 epochs": the 30-epoch counterpart).
    "compress30": Profile(
        "compress30", ("mnist", "fashion_mnist"), 30,
        {"mnist": (512,), "fashion_mnist": (128,)}, (), {}, peers=False,
        penalty="size", lam=0.001, droprate_init=0.2, learning_rate_decay="cosine",
        model_budgets={"mnist": 210 * 1024, "fashion_mnist": 140 * 1024},
        budget_alphas={"mnist": (0.998,), "fashion_mnist": (0.998,)}, validation=5000),
    # End-to-end smoke test: seconds, on a subset.
    "tiny": Profile("tiny", ("fashion_mnist",), 2, (128, 256), (128,), {"fashion_mnist": (0.98,)},
                    train_subset=2000, test_subset=500),
}


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


def _run_one(results, method, value, data, epochs, out, note="", **kwargs):
    """One harness run in `out/<config>/`, appended to `results` (unless it returns None)."""
    cid = harness.config_id(method, value) + kwargs.pop("suffix", "")
    print(f"[reproduce] {kwargs['dataset']} {cid}{note} ({epochs} epochs)", flush=True)
    r = harness.run_config(method, value, data, epochs, os.path.join(out, cid), **kwargs)
    if r is not None:
        r["config"] = cid  # its directory (a model-budget run shares method and value with another)
        results.append(r)
        print(f"[reproduce] {kwargs['dataset']} {cid}: error {r['error_pct']:.2f}%, "
              f"params {r['params']:,}, {r['seconds']:.0f} s", flush=True)
    return r


def run(output, profile="quick", datasets=None, epochs=None, lam=None, gamma=0.5,
        learning_rate=1e-3, budget="best-sp", seed=0, peers=None, verbose=2):
    """Runs (or resumes) a profile and writes results, the Markdown table and plots.

    Args:
        output: Output directory.
        profile: "paper", "quick", "tiny" or a :class:`Profile`.
        datasets: Restrict to these datasets.
        epochs: Override the profile's epochs.
        lam: L0 lambda, one value or one per gated layer (None: the profile's
            `lam`, else the paper's 0.01).
        gamma: Hard-pruning threshold (the paper's 0.5).
        learning_rate: Adam learning rate.
        budget: DynHP budget: "best-sp" (per-epoch memory of the SP run with the
            lowest test error, the paper's rule; the lowest validation error for
            a profile with `validation`), "paper" (the paper's budgets:
            MNIST SP bs 512, Fashion-MNIST SP bs 128), or bytes / a string like "1433KiB".
        seed: Seed.
        peers: Run the dense and tfmot peers (default: the profile's setting).
        verbose: Keras verbosity of each run.

    Returns:
        The list of result records (:func:`keras_dynhp.experiments.harness.run_config`);
        the tfmot record also has `sparsity_from`, the label of the DynHP run
        whose sparsity it was given.
    """
    if isinstance(profile, str) and profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}; expected one of {sorted(PROFILES)}.")
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    epochs = prof.epochs if epochs is None else int(epochs)
    if lam is None:
        lam = prof.lam if prof.lam is not None else 0.01
    peers = prof.peers if peers is None else peers
    names = prof.datasets if datasets is None else tuple(datasets)
    os.makedirs(output, exist_ok=True)
    write_json(os.path.join(output, "settings.json"), {
        "profile": prof.name, "datasets": names, "epochs": epochs, "lambda": lam, "gamma": gamma,
        "learning_rate": learning_rate, "budget": budget, "seed": seed,
        "sp_batch_sizes": prof.sp_batch_sizes, "hp_batch_sizes": prof.hp_batch_sizes,
        "alphas": {k: prof.alphas.get(k, ()) for k in names},
        "train_subset": prof.train_subset, "test_subset": prof.test_subset,
        "penalty": prof.penalty, "model_budgets": prof.model_budgets, "budget_alphas": prof.budget_alphas,
    })
    results = []
    for dataset in names:
        data = load(dataset, prof.train_subset, prof.test_subset, seed)
        input_dim = data[0][0].shape[1]
        num_classes = int(max(data[0][1].max(), data[1][1].max())) + 1
        dense_params = harness.dense_params(input_dim, LENET_HIDDEN, num_classes)
        out = os.path.join(output, dataset)
        common = {"dataset": dataset, "hidden": LENET_HIDDEN, "learning_rate": learning_rate,
                  "seed": seed, "verbose": verbose}
        if prof.validation:
            common["validation"] = prof.validation
        gated = {"l0_lambda": lam, "gamma": gamma, "penalty": prof.penalty,
                 "learning_rate_decay": prof.learning_rate_decay, **common}
        if prof.droprate_init is not None:
            gated["droprate_init"] = prof.droprate_init
        sp = [_run_one(results, "sp", b, data, epochs, out, **gated) for b in prof.batch_sizes("sp", dataset)]
        best_sp = min(sp, key=_selection_error)
        if budget == "best-sp":
            budget_bytes = memory.mo_bytes(dense_params, best_sp["value"], input_dim)
        elif budget == "paper":
            budget_bytes = memory.mo_bytes(dense_params, PAPER_BUDGET_BATCH.get(dataset, 128), input_dim)
        else:
            budget_bytes = memory.parse_bytes(budget)
        model_budget = (prof.model_budgets or {}).get(dataset)
        if model_budget is not None:
            model_budget = memory.parse_bytes(model_budget)
            for a in (prof.budget_alphas or {}).get(dataset, ()):
                _run_one(results, "dynhp", a, data, epochs, out, budget_bytes=budget_bytes,
                         model_budget=_model_budget(prof, model_budget), suffix=f"_model{model_budget}",
                         tag=f"model budget {memory.paper_mbytes(model_budget):.3f}", **gated)
        for b in prof.batch_sizes("hp", dataset):
            _run_one(results, "hp", b, data, epochs, out, **gated)
        dyn = [_run_one(results, "dynhp", a, data, epochs, out, budget_bytes=budget_bytes, **gated)
               for a in prof.alphas.get(dataset, ())]
        if peers:
            ref_batch = int(best_sp["value"])
            _run_one(results, "dense", ref_batch, data, epochs, out, note=" peer", **common)
            if dyn:
                target = min(dyn, key=_selection_error)
                sparsity = 1.0 - target["params"] / dense_params
                r = _run_one(results, "tfmot", ref_batch, data, epochs, out, sparsity=sparsity,
                             note=f" peer at sparsity {sparsity:.3f} (from {target['label']})", **common)
                if r is not None:
                    r["sparsity_from"] = target["label"]
    write_outputs(output, results, epochs)
    return results


def _model_budget(prof, max_bytes):
    """The profile's model budget: bytes (the library's ModelBudget defaults) or a ModelBudget."""
    from keras_dynhp.budget import ModelBudget

    if prof.budget_deadline is None and prof.budget_recover is None:
        return max_bytes
    kwargs = {}
    if prof.budget_deadline is not None:
        kwargs["deadline_fraction"] = prof.budget_deadline
    if prof.budget_recover is not None:
        kwargs["recover"] = prof.budget_recover
    return ModelBudget(max_bytes, **kwargs)


def _selection_error(record):
    """What a choice between runs looks at: the validation error when the run held one out, else
    the test error (the paper's rule, kept for the profiles that reproduce its rows)."""
    val = record.get("val_error_pct")
    return record["error_pct"] if val is None else val


# ------------------------------------------------------------------ outputs
def reference(results, dataset):
    """The reference SP run of `dataset`: the lowest validation error when the runs held a
    validation split out, else the lowest test error (the paper's reference row)."""
    sp = [r for r in results if r["dataset"] == dataset and r["method"] == "sp"]
    return min(sp, key=_selection_error) if sp else None


def _pct(value, ref):
    return 100.0 * (value / ref - 1.0) if ref else float("nan")


def table_rows(results):
    """Rows of the paper's table: error, model size, training memory vs the best SP run."""
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        ref = reference(results, dataset)
        for r in (r for r in results if r["dataset"] == dataset):
            err_d = _pct(r["error_pct"], ref["error_pct"]) if ref else float("nan")
            size_d = _pct(r["model_bytes"], ref["model_bytes"]) if ref else float("nan")
            mem_d = _pct(r["training_bytes"], ref["training_bytes"]) if ref else float("nan")
            rows.append({
                "dataset": dataset,
                "method": r["label"] + (" (ref)" if r is ref else ""),
                "epochs": r["epochs"],
                "error": f"{r['error_pct']:.2f} ({err_d:+.0f}%)",
                "model": f"{memory.paper_mbytes(r['model_bytes']):.3f} ({size_d:+.0f}%)",
                "memory": f"{memory.paper_training_mbytes(r['training_bytes']):.4f} ({mem_d:+.0f}%)",
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
#: The columns of results.csv: every scalar key of a result record, then the paper's units.
CSV_COLUMNS = tuple(k for k in harness.RESULT_KEYS if k not in ("architecture", "history")) + (
    "paper_model_mbytes", "paper_training_mbytes")


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
    """Writes results.json, results.csv (:data:`CSV_COLUMNS`), table.md and the plots."""
    write_json(os.path.join(output, "results.json"), results)
    rows = [{**{k: r.get(k) for k in CSV_COLUMNS},
             "paper_model_mbytes": memory.paper_mbytes(r["model_bytes"]),
             "paper_training_mbytes": memory.paper_training_mbytes(r["training_bytes"])}
            for r in results]
    write_csv(os.path.join(output, "results.csv"), rows)
    write_bytes(os.path.join(output, "table.md"), markdown(results).encode())
    plot(output, results)


def plot(output, results):
    """PNG figures in the style of the paper's Fig. 1-7, one set per dataset."""
    from keras_dynhp.experiments import report

    paths = []
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        rs = [r for r in results if r["dataset"] == dataset]
        prefix = os.path.join(output, dataset)
        runs = {r["label"]: r["history"] for r in rs}
        pruned = {r["label"]: r["history"] for r in rs if r["method"] in harness.GATED_METHODS}
        dyn = {r["label"]: r["history"] for r in rs if r["method"] == "dynhp"}
        for r in rs:  # Fig. 1: active units per layer over epochs, per HP/DynHP run
            if r["method"] in ("hp", "dynhp"):
                p = os.path.join(output, dataset, r["config"], "units.png")
                report.plot_units(r["history"], p, title=f"{dataset}: {r['label']}, units per layer")
                paths.append(p)
        memory_budgets = {r["budget_bytes"] for r in rs if r.get("budget_bytes")}
        model_budgets = {r["model_budget_bytes"] for r in rs if r.get("model_budget_bytes")}
        specs = [
            ("memory_total_bytes", runs, "training memory (KiB, running sum, paper accounting)",
             1 / 1024, "memory", {}),
            ("mo_bytes", pruned, "memory per epoch: network + batch (KiB)", 1 / 1024, "memory_per_epoch",
             {f"DynHP budget {b / 1024:.0f} KiB": b for b in sorted(memory_budgets)}),
            ("delivered_bytes", pruned, "size of the compact model (KB)", 1 / 1000, "model_size",
             {f"model budget {b / 1000:.0f} KB": b for b in sorted(model_budgets)}),
            ("val_error", runs, "test error (%, log scale)", 100, "error", {}),
            ("batch_size", dyn, "batch size", None, "batch_size", {}),
        ]
        for key, group, ylabel, scale, name, lines in specs:
            group = {k: v for k, v in group.items() if report.series(v, key)}
            if not group:
                continue
            p = f"{prefix}_{name}.png"
            report.plot_runs(group, key, p, ylabel=ylabel, title=dataset, scale=scale,
                             logy=(name == "error"), lines=lines)
            paths.append(p)
    return paths
