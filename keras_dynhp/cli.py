"""The `keras-dynhp` command line (also `python -m keras_dynhp`).

Subcommands::

    keras-dynhp train    --dataset fashion_mnist --mode dynhp --epochs 3 --output runs/demo
    keras-dynhp evaluate runs/demo/model.keras --dataset fashion_mnist
    keras-dynhp export   runs/demo/model.keras --quantization float16 --output runs/demo/model-f16.tflite
    keras-dynhp report   runs/demo

`train` writes into its output directory: `model.keras` (the DynHPModel),
`compact.keras` (gate-free, :func:`keras_dynhp.strip`), `model.tflite`,
`history.csv` and `history.json` (every per-epoch figure logged by
`DynHPModel.fit`), `baseline_history.json` (with the dense baseline), the plots
`units.png`, `memory.png`, `error.png`, `batch_size.png` (needs matplotlib),
`summary.json` and `summary.md` (test error, parameters, model size and
training memory against a dense Keras MLP of the same shape).

User errors (bad flags, missing or wrong files, data not found, a budget too
small) print one line ``keras-dynhp: error: ...`` on stderr and exit with
status 2 (command-line mistakes) or 1 (files, data); anything else is a bug and
keeps its traceback.
"""

import argparse
import csv
import json
import math
import os
import shlex
import sys
import time

import numpy as np

from keras_dynhp._io import to_jsonable, write_json

PROG = "keras-dynhp"
QUANTIZATIONS = ("float", "dynamic", "float16", "int8")
DATASET_CHOICES = ("fashion_mnist", "mnist")
UNITS_CHOICES = ("KiB", "paper")
REPRESENTATIVE_EXAMPLES = 300  # training images given to the int8 converter (export uses up to 300)
EVAL_BATCH = 1000  # batch of every Keras accuracy computation (train and evaluate agree)
TFLITE_EVAL_BATCH = 100

MODE_LABELS = {"sp": "SP", "hp": "HP", "dynhp": "DynHP"}


class UsageError(Exception):
    """A bad command line: exit status 2."""


class RunError(Exception):
    """A missing or unsuitable file, or missing data: exit status 1."""


# --------------------------------------------------------------------------
# Argument types
# --------------------------------------------------------------------------


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {text!r}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; received {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; received {text!r}")
    return value


def _float_in(low, high, low_open=False, high_open=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high)
        if not ok:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"expected a number in {interval}; received {text!r}")
        return value

    return parse


def _comma_list(text, cast, valid, example):
    """Parses "a,b,c" with `cast`; every value must pass `valid`."""
    try:
        values = [cast(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(valid(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected {example}; received {text!r}")
    return values


def _hidden(text):
    return _comma_list(text, int, lambda u: u > 0,
                       "comma-separated positive integers such as 300,100")


def _lambdas(text):
    return _comma_list(text, float, lambda v: math.isfinite(v) and v >= 0,
                       "a number >= 0 or a comma-separated list such as 0.05,0.05,0.5")


def _budget(text):
    from keras_dynhp import memory

    try:
        return memory.parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Parser(argparse.ArgumentParser):
    """Prints argparse errors as one line, like every other user error."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def build_parser():
    """The argument parser of `keras-dynhp` (one subparser per command)."""
    parser = _Parser(
        prog=PROG,
        description="Dynamic Hard Pruning (DynHP) for Keras 3: train, evaluate, export, report.",
    )
    from keras_dynhp import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # ------------------------------------------------------------ train
    t = sub.add_parser(
        "train", help="train an MLP with SP, HP or DynHP and write model, .tflite, history, plots, summary",
        description="Trains an L0Dense MLP with soft pruning (sp), hard pruning (hp) or DynHP "
                    "(dynhp), optionally a dense Keras MLP of the same shape as the baseline, and "
                    "writes model.keras, compact.keras, model.tflite, history.csv/json, plots, "
                    "summary.json/md into --output.")
    t.add_argument("--dataset", choices=DATASET_CHOICES, default="fashion_mnist")
    t.add_argument("--mode", choices=("sp", "hp", "dynhp"), default="dynhp")
    t.add_argument("--hidden", type=_hidden, default=[300, 100], metavar="N[,N...]",
                   help="hidden layer widths (default 300,100: LeNet-300-100)")
    t.add_argument("--epochs", type=_positive_int, default=3)
    t.add_argument("--batch-size", type=_positive_int, default=128,
                   help="batch size of sp/hp and of the dense baseline; the default DynHP budget is "
                        "the memory of SP at this batch size (default 128)")
    t.add_argument("--initial-batch-size", type=_positive_int, default=16,
                   help="DynHP batch size of the first epoch (default 16)")
    t.add_argument("--alpha-bs", type=_float_in(0, 1, high_open=True), default=0.98,
                   help="DynHP batch-size smoothing alpha_bs in [0, 1) (default 0.98)")
    t.add_argument("--budget", type=_budget, default=None, metavar="SIZE",
                   help="DynHP memory budget: bytes or e.g. 1433KiB, 2.5MiB (default: network + one "
                        "batch of --batch-size inputs, i.e. SP's memory in the paper's accounting)")
    t.add_argument("--variance-every", type=_positive_int, default=1,
                   help="DynHP measures the gradient variance every k steps (default 1)")
    t.add_argument("--lambda", dest="l0_lambda", type=_lambdas, default=[0.01], metavar="L[,L...]",
                   help="L0 strength: one value or one per gated layer (input + each hidden layer); "
                        "default 0.01 (the paper's)")
    t.add_argument("--gamma", type=_float_in(0, 1), default=0.5,
                   help="hard-pruning threshold on activation rates (default 0.5)")
    t.add_argument("--droprate-init", type=_float_in(0, 1, low_open=True, high_open=True), default=0.5,
                   help="initial drop rate of the gates (default 0.5)")
    t.add_argument("--learning-rate", type=_float_in(0, math.inf, low_open=True, high_open=True),
                   default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--seed", type=_non_negative_int, default=0)
    t.add_argument("--subset", type=_positive_int, default=None, metavar="N",
                   help="train on N training images only (a seeded random subset); the test set is whole")
    t.add_argument("--quantization", choices=QUANTIZATIONS, default="float",
                   help="model.tflite weights (int8: full integer with representative training images)")
    t.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also train a dense Keras MLP of the same shape for --epochs at --batch-size "
                        "(default: on)")
    t.add_argument("--units", choices=UNITS_CHOICES, default="KiB",
                   help="memory units of the summary table: KiB or the paper's MBytes (default KiB)")
    t.add_argument("--output", default=None, metavar="DIR",
                   help="output directory (default runs/<dataset>-<mode>)")
    t.add_argument("--quiet", action="store_true",
                   help="no progress output; only the summary table is printed")
    t.set_defaults(func=cmd_train)

    # --------------------------------------------------------- evaluate
    e = sub.add_parser("evaluate", help="test accuracy of a .keras or .tflite model",
                       description="Prints the test accuracy and error of a .keras model (Keras) "
                                   "or a .tflite model (LiteRT interpreter).")
    e.add_argument("model", metavar="MODEL", help="a .keras or .tflite file")
    e.add_argument("--dataset", choices=DATASET_CHOICES, default="fashion_mnist")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    e.set_defaults(func=cmd_evaluate)

    # ----------------------------------------------------------- export
    x = sub.add_parser("export", help="write a LiteRT (.tflite) file of a .keras model",
                       description="Strips the gates of a trained DynHPModel (or takes a plain "
                                   "Keras model) and writes a LiteRT file.")
    x.add_argument("model", metavar="MODEL", help="a .keras file (model.keras or compact.keras)")
    x.add_argument("--quantization", choices=QUANTIZATIONS, default="float")
    x.add_argument("--output", default=None, metavar="PATH",
                   help="output .tflite path (default: next to MODEL, e.g. model-int8.tflite)")
    x.add_argument("--dataset", choices=DATASET_CHOICES, default="fashion_mnist",
                   help="where int8's representative training images come from")
    x.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the choice of representative images")
    x.set_defaults(func=cmd_export)

    # ----------------------------------------------------------- report
    r = sub.add_parser("report", help="regenerate the plots and summary table of a run directory",
                       description="Reads history.json and summary.json of a `train` output "
                                   "directory, rewrites the plots and summary.md and prints the table.")
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.add_argument("--units", choices=UNITS_CHOICES, default=None,
                   help="memory units of the table (default: those of the run)")
    r.set_defaults(func=cmd_report)
    return parser


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _say(args, *parts):
    if not getattr(args, "quiet", False):
        print(*parts, flush=True)


def _warn(message):
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def _one_line(error):
    text = " ".join(str(error).split())
    return text or type(error).__name__


def load_dataset(name):
    """`datasets.load_data(name)`, with missing or corrupt data as a RunError."""
    from keras_dynhp.experiments import datasets

    try:
        return datasets.load_data(name)
    except datasets.DataError as e:
        raise RunError(f"cannot load {name}: {_one_line(e)}") from e


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunError(f"{path} not found (is this a `{PROG} train` output directory?)") from None
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read {path}: {_one_line(e)}") from e


def write_history(history, json_path, csv_path=None):
    """Writes a history (dict of per-epoch lists) as JSON and optionally CSV (one row per epoch)."""
    history = to_jsonable(dict(history))
    write_json(json_path, history)
    if csv_path:
        epochs = max((len(v) for v in history.values()), default=0)
        keys = list(history)
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch"] + keys)
            for i in range(epochs):
                writer.writerow([i] + [history[k][i] if i < len(history[k]) else "" for k in keys])


def keras_accuracy(model, x, y):
    """(correct, n) of a Keras classifier: argmax of `predict` at batch size 1000."""
    pred = model.predict(x, batch_size=EVAL_BATCH, verbose=0)
    return int((np.argmax(pred, axis=-1) == np.asarray(y)).sum()), len(y)


def tflite_accuracy(path, x, y):
    """Accuracy of a `.tflite` classifier with the LiteRT interpreter."""
    from keras_dynhp import export

    return export.evaluate_tflite(path, x, y, batch_size=TFLITE_EVAL_BATCH)


def _representative(x, seed, n=REPRESENTATIVE_EXAMPLES):
    rng = np.random.default_rng(seed)
    return x[np.sort(rng.permutation(len(x))[: min(n, len(x))])]


def _export(model, path, quantization, representative):
    from keras_dynhp import export

    kwargs = {"quantization": None if quantization == "float" else quantization}
    if quantization == "int8":
        kwargs["representative_data"] = representative
    try:
        return export.export_tflite(model, path, **kwargs)
    except ValueError as e:  # an untrained model, or a quantization this version lacks
        raise RunError(f"cannot export {quantization} .tflite: {_one_line(e)}") from e


def build_dense(hidden, input_dim, num_classes, learning_rate, seed):
    """A compiled dense Keras MLP (ReLU, softmax), the baseline of `train`."""
    import keras

    inputs = keras.Input((input_dim,), name="pixels")
    h = inputs
    for i, units in enumerate(hidden):
        h = keras.layers.Dense(units, activation="relu", name=f"dense_{i}",
                               kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i))(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=f"dense_{len(hidden)}",
                                 kernel_initializer=keras.initializers.GlorotUniform(
                                     seed=seed + len(hidden)))(h)
    model = keras.Model(inputs, outputs, name="dense_baseline")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _verbose(args):
    if args.quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2  # progress bars flood logs: one line per epoch there


# --------------------------------------------------------------------------
# Plots and tables of a run
# --------------------------------------------------------------------------


def write_plots(run_dir, history, label, baseline_history=None, baseline_label=None):
    """units.png, memory.png, error.png, batch_size.png; returns the files written.

    Without matplotlib, warns and returns [] (the rest of the run is kept).
    """
    from keras_dynhp.experiments import report

    runs = {label: history}
    if baseline_history:
        runs[baseline_label or "dense baseline"] = baseline_history
    def path(name):
        return os.path.join(run_dir, name)

    try:
        written = [report.plot_units(history, path("units.png"), title=f"{label}: active units per layer")]
        written.append(report.plot_runs(
            runs, "memory_total_bytes", path("memory.png"), scale=1 / 1024,
            ylabel="training memory so far (KiB, paper accounting)", title="Training memory"))
        if any(report.series(h, "val_error") for h in runs.values()):
            written.append(report.plot_runs(
                runs, "val_error", path("error.png"), scale=100, ylabel="test error (%)",
                title="Test error at each epoch end (before that epoch's pruning)"))
        written.append(report.plot_runs(runs, "batch_size", path("batch_size.png"),
                                        ylabel="batch size", title="Batch size"))
    except ImportError as e:
        _warn(f"plots skipped: {e}")
        return []
    return written


def _table(summary, units):
    from keras_dynhp.experiments import report

    runs = summary["runs"]
    reference = summary.get("reference")
    if reference is not None and reference not in [r["label"] for r in runs]:
        reference = None
    return report.paper_table(runs, reference=reference, units=units)


def _notes(summary):
    model = summary["model"]
    cfg = summary["config"]
    lines = [
        f"- {model['label']}: architecture {model['architecture']}, batch sizes {model['batch_sizes']}"
        + (f", budget {model['budget_bytes'] / 1024:.2f} KiB" if model.get("budget_bytes") else ""),
        (f"- trained on {summary['train_examples']:,} {cfg['dataset']} images for {cfg['epochs']} "
         f"epochs in {summary['seconds']['train']:.0f} s; test error on {summary['test_examples']:,} "
         "test images, after the last pruning"),
    ]
    if model.get("tflite_test_accuracy") is not None:
        lines.append(
            f"- model.tflite ({cfg['quantization']}, {model['tflite_bytes']:,} bytes): LiteRT test accuracy "
            f"{100 * model['tflite_test_accuracy']:.2f}% vs Keras {100 * model['test_accuracy']:.2f}%")
    lines.append("- memory in the paper's accounting: 4 bytes per stored weight/bias (model size), "
                 "summed with one input batch over epochs (training memory); changes are relative "
                 f"to the reference ({summary.get('reference') or 'none'})")
    if summary.get("peak_rss_bytes"):
        lines.append(f"- peak RSS of the training process: {summary['peak_rss_bytes'] / 2**20:.0f} MiB "
                     "(real memory, not the paper's accounting)")
    return lines


def write_summary_md(run_dir, summary, units):
    """summary.md (command, table, notes); returns the table."""
    table = _table(summary, units)
    text = [f"# {PROG} {summary['config']['mode']} on {summary['config']['dataset']}", ""]
    if summary.get("command"):
        text += ["    " + summary["command"], ""]
    text += [table, ""] + _notes(summary) + [""]
    with open(os.path.join(run_dir, "summary.md"), "w") as f:
        f.write("\n".join(text))
    return table


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def _prepare_model(args, input_dim, num_classes):
    """Builds the DynHPModel and resolves the budget; flag problems are UsageErrors."""
    import keras_dynhp
    from keras_dynhp import memory
    from keras_dynhp.batch_size import DynamicBatchSize

    n_layers = len(args.hidden) + 1
    lambdas = args.l0_lambda
    if len(lambdas) not in (1, n_layers):
        raise UsageError(
            f"--lambda needs 1 or {n_layers} values for --hidden {','.join(map(str, args.hidden))} "
            f"(one per gated layer: the input and each hidden layer); received {len(lambdas)}")
    lambdas = lambdas * n_layers if len(lambdas) == 1 else lambdas
    try:
        model = keras_dynhp.build_mlp(
            args.hidden, input_dim=input_dim, num_classes=num_classes, l0_lambda=lambdas,
            droprate_init=args.droprate_init, learning_rate=args.learning_rate, seed=args.seed)
    except ValueError as e:
        raise UsageError(_one_line(e)) from e
    dense_params = model.count_params_stored()
    budget = None
    if args.mode == "dynhp":
        budget = args.budget if args.budget is not None else memory.mo_bytes(
            dense_params, args.batch_size, input_dim)
        try:
            DynamicBatchSize(args.alpha_bs, budget, args.initial_batch_size).check_fits(
                dense_params, input_dim)
        except ValueError as e:
            raise UsageError(f"--budget too small: {_one_line(e)}") from e
    elif args.budget is not None:
        _warn("--budget is only used by --mode dynhp; ignored")
    return model, lambdas, dense_params, budget


def cmd_train(args):
    import keras

    import keras_dynhp
    from keras_dynhp import __version__, memory

    output = args.output or os.path.join("runs", f"{args.dataset}-{args.mode}")
    (x, y), (xt, yt) = load_dataset(args.dataset)
    input_dim, num_classes = x.shape[1], int(max(y.max(), yt.max())) + 1
    keras.utils.set_random_seed(args.seed)
    model, lambdas, dense_params, budget = _prepare_model(args, input_dim, num_classes)
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create --output {output}: {_one_line(e)}") from e
    if args.subset is not None and args.subset < len(x):
        idx = np.sort(np.random.default_rng(args.seed).permutation(len(x))[: args.subset])
        x, y = x[idx], y[idx]
    label = MODE_LABELS[args.mode] + (f" a={args.alpha_bs:g}" if args.mode == "dynhp" else "")
    verbose = _verbose(args)
    hidden = ",".join(map(str, args.hidden))

    _say(args, f"{label} on {len(x):,} {args.dataset} training images, {args.epochs} epochs: "
               f"architecture {model.architecture()} ({dense_params:,} parameters), lambda {lambdas}"
         + (f", budget {memory.kib(budget):.2f} KiB, initial batch {args.initial_batch_size}"
            if budget else f", batch {args.batch_size}"))
    fit_kwargs = {"epochs": args.epochs, "mode": args.mode, "gamma": args.gamma, "seed": args.seed,
                  "validation_data": (xt, yt), "verbose": verbose}
    if args.mode == "dynhp":
        fit_kwargs.update(alpha_bs=args.alpha_bs, memory_budget=budget,
                          initial_batch_size=args.initial_batch_size,
                          variance_every=args.variance_every)
    else:
        fit_kwargs.update(batch_size=args.batch_size)
    def path(name):
        return os.path.join(output, name)

    # After every epoch (and its surgery): the model and the history so far, so that an
    # interrupted run keeps its last finished epoch.
    fit_kwargs["callbacks"] = [keras.callbacks.ModelCheckpoint(path("model.keras")),
                               keras_dynhp.callbacks.PruningLogger(path("history.csv"))]
    start = time.perf_counter()
    try:
        history = model.fit(x, y, **fit_kwargs).history
    except KeyboardInterrupt:
        if os.path.exists(path("model.keras")):
            _warn(f"interrupted: the last finished epoch is in {path('model.keras')} "
                  f"and {path('history.csv')}")
        raise
    train_seconds = time.perf_counter() - start

    model.save(path("model.keras"))
    keras_dynhp.strip(model).save(path("compact.keras"))
    _say(args, f"exporting {path('model.tflite')} ({args.quantization})")
    _export(model, path("model.tflite"), args.quantization, _representative(x, args.seed))
    correct, n_test = keras_accuracy(model, xt, yt)
    accuracy = correct / n_test
    tflite_acc = tflite_accuracy(path("model.tflite"), xt, yt)
    if args.quantization == "float" and abs(tflite_acc - accuracy) > 0.001:
        _warn(f"the float .tflite accuracy {100 * tflite_acc:.2f}% differs from Keras "
              f"{100 * accuracy:.2f}% by more than 0.1 points")

    baseline = None
    baseline_label = f"dense {'-'.join(map(str, args.hidden))} (batch {args.batch_size})"
    baseline_memory = args.epochs * memory.mo_bytes(dense_params, args.batch_size, input_dim)
    if args.baseline:
        _say(args, f"dense baseline: Keras Dense layers {hidden}, batch {args.batch_size}, "
                   f"{args.epochs} epochs")
        keras.utils.set_random_seed(args.seed)
        dense = build_dense(args.hidden, input_dim, num_classes, args.learning_rate, args.seed)
        start = time.perf_counter()
        baseline = dict(dense.fit(x, y, batch_size=args.batch_size, epochs=args.epochs,
                                  validation_data=(xt, yt), verbose=verbose).history)
        baseline_seconds = time.perf_counter() - start
        epochs_done = len(baseline.get("loss", []))
        mo = memory.mo_bytes(dense.count_params(), args.batch_size, input_dim)
        baseline.update({
            "params": [dense.count_params()] * epochs_done,
            "network_bytes": [memory.network_bytes(dense.count_params())] * epochs_done,
            "batch_size": [args.batch_size] * epochs_done,
            "mo_bytes": [mo] * epochs_done,
            "memory_total_bytes": [mo * (i + 1) for i in range(epochs_done)],
        })
        baseline_correct, _ = keras_accuracy(dense, xt, yt)
        baseline_run = {"label": baseline_label, "error_pct": 100 * (1 - baseline_correct / n_test),
                        "params": dense.count_params(), "training_bytes": mo * epochs_done,
                        "test_accuracy": baseline_correct / n_test, "seconds": baseline_seconds}
    else:
        baseline_label += ", not trained"
        baseline_run = {"label": baseline_label, "error_pct": None, "params": dense_params,
                        "training_bytes": baseline_memory}

    model_run = {"label": label, "error_pct": 100 * (1 - accuracy),
                 "params": model.count_params_stored(),
                 "training_bytes": history["memory_total_bytes"][-1]}
    summary = {
        "keras_dynhp_version": __version__,
        "command": getattr(args, "command_line", None),
        "config": {
            "dataset": args.dataset, "mode": args.mode, "hidden": args.hidden, "epochs": args.epochs,
            "l0_lambda": lambdas, "gamma": args.gamma, "droprate_init": args.droprate_init,
            "learning_rate": args.learning_rate, "seed": args.seed, "subset": args.subset,
            "batch_size": args.batch_size, "alpha_bs": args.alpha_bs,
            "initial_batch_size": args.initial_batch_size, "budget_bytes": budget,
            "variance_every": args.variance_every, "quantization": args.quantization,
            "baseline": args.baseline, "units": args.units,
        },
        "train_examples": len(x),
        "test_examples": n_test,
        "seconds": {"train": train_seconds},
        "model": {
            **model_run,
            "test_accuracy": accuracy,
            "test_correct": correct,
            "test_error_pct": 100 * (1 - accuracy),
            "tflite_test_accuracy": tflite_acc,
            "tflite_bytes": os.path.getsize(path("model.tflite")),
            "architecture": model.architecture(),
            "model_bytes": model.network_bytes(),
            "batch_sizes": [int(b) for b in history["batch_size"]],
            "budget_bytes": budget,
        },
        "baseline": {**baseline_run, "trained": baseline is not None, "batch_size": args.batch_size,
                     "model_bytes": memory.network_bytes(baseline_run["params"])},
        "reference": baseline_label,
        "runs": [baseline_run, model_run],
        "peak_rss_bytes": memory.peak_rss_bytes(),
    }
    for run in summary["runs"]:
        run.pop("test_accuracy", None)
        run.pop("seconds", None)
    if baseline is not None:
        summary["seconds"]["baseline"] = summary["baseline"]["seconds"]
    write_history(history, path("history.json"), path("history.csv"))
    if baseline is not None:
        write_history(baseline, path("baseline_history.json"))
    write_plots(output, history, label, baseline, baseline_label)
    write_json(path("summary.json"), summary)
    table = write_summary_md(output, summary, args.units)
    print()
    print(table)
    if not args.quiet:
        print()
        print("\n".join(_notes(summary)))
        print(f"\nwritten to {output}/: " + ", ".join(sorted(os.listdir(output))))
    return 0


def _check_model_path(path, allowed):
    if not os.path.exists(path):
        raise RunError(f"{path}: no such file")
    if os.path.isdir(path):
        raise RunError(f"{path} is a directory, not a {' or '.join(allowed)} model file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in allowed:
        raise RunError(f"{path}: expected a {' or '.join(allowed)} model file; received a "
                       f"{ext or 'extensionless'} file")
    return ext


def load_keras_model(path, compile=False):
    """`keras.saving.load_model` with unreadable files as RunErrors."""
    import zipfile

    import keras

    import keras_dynhp  # noqa: F401  (registers the custom layers)

    if not zipfile.is_zipfile(path):  # Keras would say "File not found" for a corrupt file
        raise RunError(f"{path} is not a .keras file (a .keras model is a zip archive)")
    try:
        return keras.saving.load_model(path, compile=compile)
    except (ValueError, OSError, zipfile.BadZipFile, KeyError, TypeError) as e:
        raise RunError(f"cannot load {path} as a Keras model: {_one_line(e)}") from e


def cmd_evaluate(args):
    ext = _check_model_path(args.model, (".keras", ".tflite"))
    (_, _), (xt, yt) = load_dataset(args.dataset)
    if ext == ".keras":
        model = load_keras_model(args.model)
        try:  # a model for other inputs is the user's mistake, not a bug
            model.predict(xt[:1], verbose=0)
        except ValueError as e:
            raise RunError(f"{args.model} does not take {args.dataset} images: {_one_line(e)}") from e
        correct, n = keras_accuracy(model, xt, yt)
        accuracy, runtime, kind = correct / n, "keras", type(model).__name__
    else:
        try:
            accuracy = tflite_accuracy(args.model, xt, yt)
        except (ValueError, RuntimeError) as e:
            raise RunError(f"cannot run {args.model} on {args.dataset}: {_one_line(e)}") from e
        n = len(yt) - len(yt) % TFLITE_EVAL_BATCH
        correct, runtime, kind = round(accuracy * n), "litert", "tflite"
    result = {"model": args.model, "runtime": runtime, "kind": kind, "dataset": args.dataset,
              "test_examples": n, "test_correct": correct, "test_accuracy": accuracy,
              "test_error_pct": 100 * (1 - accuracy)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model} ({kind}, {runtime}) on {n:,} {args.dataset} test images: "
              f"accuracy {100 * accuracy:.2f}% ({correct:,}/{n:,}), error {100 * (1 - accuracy):.2f}%")
    return 0


def cmd_export(args):
    _check_model_path(args.model, (".keras",))
    model = load_keras_model(args.model, compile=True)
    representative = None
    if args.quantization == "int8":
        (x, _), _ = load_dataset(args.dataset)
        representative = _representative(x, args.seed)
    output = args.output
    if output is None:
        stem = os.path.splitext(args.model)[0]
        output = stem + ("" if args.quantization == "float" else f"-{args.quantization}") + ".tflite"
    try:
        directory = os.path.dirname(output)
        if directory:
            os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create the directory of --output {output}: {_one_line(e)}") from e
    _export(model, output, args.quantization, representative)
    print(f"wrote {output} ({args.quantization}, {os.path.getsize(output):,} bytes)")
    return 0


def cmd_report(args):
    run_dir = args.run_dir
    if not os.path.isdir(run_dir):
        raise RunError(f"{run_dir}: no such directory")
    history = _read_json(os.path.join(run_dir, "history.json"))
    summary = _read_json(os.path.join(run_dir, "summary.json"))
    if not isinstance(history, dict) or not isinstance(summary, dict) or "runs" not in summary:
        raise RunError(f"{run_dir}: history.json/summary.json are not those of `{PROG} train`")
    baseline_path = os.path.join(run_dir, "baseline_history.json")
    baseline = _read_json(baseline_path) if os.path.exists(baseline_path) else None
    units = args.units or summary.get("config", {}).get("units", "KiB")
    write_plots(run_dir, history, summary["model"]["label"], baseline, summary.get("reference"))
    print(write_summary_md(run_dir, summary, units))
    return 0


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def main(argv=None):
    """Runs `keras-dynhp` with `argv` (default: sys.argv[1:]); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, argparse errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    args.command_line = " ".join(shlex.quote(a) for a in [PROG] + argv)
    try:
        return args.func(args) or 0
    except UsageError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
