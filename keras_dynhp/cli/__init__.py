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

The network: `train --arch mlp` (the default: `--hidden` widths, LeNet-300-100
unless told) or `--arch lenet5` (LeNet-5-Caffe, :func:`keras_dynhp.build_lenet5`,
on the images; its dense baseline is a plain Keras LeNet-5 of the same shape),
or `--model my_model.keras`: your own Keras model, converted with its weights
by :func:`keras_dynhp.prune` (a Dense chain, or convolutions and pooling
before it); the baseline is then your model trained plainly from the same
weights, with a fresh optimizer of its class and settings.

Your own data: `train`, `evaluate` and `export` take `--data PATH` instead of
`--dataset`: a `.npz` file holding `x_train`, `y_train`, `x_test`, `y_test`,
or a folder with one sub-folder of images per class (or `train/` and `test/`
folders of those; otherwise a seeded fifth of each class is the test set),
read by :func:`keras_dynhp.experiments.user_data.load_file`. Images are
flattened for the MLP; uint8 data are held as uint8
(:class:`keras_dynhp.data.ScaledArray`) and scaled to [0, 1] batch by batch.
A bad file (missing arrays, mismatched lengths, labels out of range, an
unreadable image) is one error line naming it.

`reproduce` runs the paper's grid (:mod:`keras_dynhp.experiments.reproduce`),
`data` fetches and inspects MNIST / Fashion-MNIST
(:mod:`keras_dynhp.experiments.datasets`). The scripts in `tflite/` run
`export`, `evaluate` and `benchmark` through :func:`main`'s `command`.

User errors (bad flags, missing, wrong or corrupt files, data not found, a
budget too small, a diverged run) print one line ``keras-dynhp: error: ...`` on stderr and exit with
status 2 (command-line mistakes) or 1 (files, data); anything else is a bug and
keeps its traceback. `keras-dynhp --help` imports neither TensorFlow nor Keras
nor the harness: every command imports what it needs.

The package holds one module per command (`keras_dynhp.cli.train`,
`evaluate`, `export`, `benchmark`, `report`, `data`, `reproduce`: each its
arguments and its `cmd_*` function), the shared argument types, messages and
file checks (`_common`) and what `train` and `report` write about a run
(`_output`); this module builds the parser and runs a command.
"""

import contextlib
import os
import shlex
import sys

from keras_dynhp.cli._common import (  # noqa: F401  (the names of the former single module)
    BENCHMARK_SAMPLES,
    DATA_NAMES,
    DATASET_CHOICES,
    PROFILE_CHOICES,
    PROG,
    QUANTIZATIONS,
    UNITS_CHOICES,
    RunError,
    UsageError,
    _lines,
    _Parser,
    load_dataset,
    load_keras_model,
    write_history,
)
from keras_dynhp.cli._output import write_plots, write_summary_md  # noqa: F401
from keras_dynhp.cli.benchmark import _benchmark_arguments, cmd_benchmark
from keras_dynhp.cli.data import _data_arguments, cmd_data
from keras_dynhp.cli.evaluate import _evaluate_arguments, cmd_evaluate
from keras_dynhp.cli.export import _export_arguments, cmd_export
from keras_dynhp.cli.report import _report_arguments, cmd_report
from keras_dynhp.cli.reproduce import _reproduce_arguments, cmd_reproduce
from keras_dynhp.cli.sweep import _sweep_arguments, cmd_sweep
from keras_dynhp.cli.train import _train_arguments, cmd_train

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
    "sweep": (
        "train over a grid of flags (lists of values, seeds), one process per configuration",
        ("Runs `train` for every combination of the listed flag values (e.g. --model-budget "
         "50KB,100KB --alpha-bs 0.97,0.98 --seeds 0,1,2), --jobs processes at a time, each in its own "
         "sub-directory of --output; finished configurations are skipped on a re-run, a failed one is "
         "retried once; writes sweep.csv, sweep.md and pareto.png (test error against model size and "
         "training memory)."),
        _sweep_arguments, cmd_sweep),
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
    parser.add_argument("--native-logs", action="store_true",
                        help="show what TensorFlow, JAX and LiteRT's C++ code writes to stderr (start-up "
                             "banners, XNNPACK and converter lines); hidden by default, Python's own "
                             "warnings and errors are always shown")
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
    """What TensorFlow, JAX and LiteRT's C++ code writes to stderr is dropped (unless --native-logs).

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


def parse_args(parser, argv):
    """`parser.parse_args(argv)`, except that `sweep` takes the flags it does not know (train's).

    Raises:
        SystemExit: As argparse does, for --help, --version and errors.
    """
    args, extras = parser.parse_known_args(argv)
    if extras and getattr(args, "func", None) is not cmd_sweep:
        return parser.parse_args(argv)  # argparse's own error for them
    return args


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
        args = parse_args(parser, argv)
    except SystemExit as e:  # --help, --version, argparse errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    args.command_line = " ".join(shlex.quote(a) for a in [prog, *argv])
    args.argv = argv if command is not None else argv[argv.index(args.command) + 1:]  # its own arguments
    # The native libraries' start-up and runtime lines (oneDNN, CUDA stubs, absl, XNNPACK) are not
    # this program's output: dropped unless --native-logs (Python's stderr is kept either way).
    native = getattr(args, "native_logs", False) and not getattr(args, "quiet", False)
    quiet = contextlib.nullcontext() if native else _native_output_silenced()
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
