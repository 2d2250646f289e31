"""`keras-dynhp train`: one configuration, its dense baseline, and the run directory.

The run directory's files, `--resume` and `--overwrite` are described in
:mod:`keras_dynhp.cli`.
"""

import argparse
import math
import os
import shlex
import time

from keras_dynhp.cli._common import (
    DATA_HELP,
    DATASET_CHOICES,
    PROG,
    QUANTIZATIONS,
    UNITS_CHOICES,
    RunError,
    UsageError,
    _budget,
    _float_in,
    _hidden,
    _lambdas,
    _makedirs,
    _non_negative_int,
    _one_line,
    _Parser,
    _positive_int,
    _read_json,
    _say,
    _verbose,
    _warn,
    data_name,
    load_keras_model,
    load_run_data,
    write_history,
)
from keras_dynhp.cli._output import _notes, write_plots, write_summary_md


def _train_arguments(t):
    t.add_argument("--dataset", choices=DATASET_CHOICES, default="fashion_mnist",
                   help="data set (default fashion_mnist)")
    t.add_argument("--data", default=None, metavar="PATH", help=DATA_HELP)
    t.add_argument("--mode", choices=("sp", "hp", "dynhp"), default="dynhp",
                   help="soft pruning, hard pruning or DynHP (default dynhp)")
    t.add_argument("--arch", choices=("mlp", "lenet5"), default="mlp",
                   help="the network: an MLP of --hidden layers (default), or LeNet-5-Caffe "
                        "(20-50-800-500 convolutions and dense layers, on the images)")
    t.add_argument("--model", dest="user_model", default=None, metavar="PATH",
                   help="your own Keras model (.keras: Dense / Conv2D layers with BatchNormalization, "
                        "DepthwiseConv2D, pooling, activations and residual Adds between them) "
                        "instead of --arch: converted by keras_dynhp.prune() with its weights; "
                        "the dense baseline is your model trained plainly")
    t.add_argument("--hidden", type=_hidden, default=[300, 100], metavar="N[,N...]",
                   help="hidden layer widths of --arch mlp (default 300,100: LeNet-300-100)")
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


def _network(args, example_shape, num_classes, gated):
    """The network of the flags, built (not trained): a DynHPModel or the plain Keras baseline."""
    import keras_dynhp
    from keras_dynhp.experiments import harness

    if getattr(args, "user", None) is not None:
        if gated:
            try:
                return keras_dynhp.prune(args.user, l0_lambda=getattr(args, "lambdas", None),
                                         droprate_init=args.droprate_init, penalty=args.penalty,
                                         seed=args.seed)
            except ValueError as e:
                raise RunError(f"--model {args.user_model}: keras_dynhp.prune() cannot convert it: "
                               f"{_one_line(e)}") from e
        return _plain_copy(args.user, args.learning_rate)
    if args.arch == "lenet5":
        if gated:
            return keras_dynhp.build_lenet5(example_shape, num_classes=num_classes)
        return harness.build_dense_lenet5(example_shape, num_classes, 1e-3, 0)
    if gated:
        return keras_dynhp.build_mlp(args.hidden, input_dim=example_shape[0], num_classes=num_classes)
    return harness.build_dense(args.hidden, example_shape[0], num_classes, 1e-3, 0)


def _plain_copy(model, learning_rate):
    """A fresh copy of the user's Keras model with its weights, compiled as it was (or with Adam)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    optimizer = getattr(model, "optimizer", None)
    optimizer = (type(optimizer).from_config(optimizer.get_config()) if optimizer is not None
                 else keras.optimizers.Adam(learning_rate))
    copy.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return copy


def _load_user_model(args):
    """The plain Keras model of --model, checked: a RunError for anything unusable."""
    from keras_dynhp.models import DynHPModel

    if args.arch != "mlp":
        raise UsageError("give --model (your network) or --arch (ours), not both")
    if not os.path.isfile(args.user_model):
        raise RunError(f"--model {args.user_model}: no such file")
    import warnings

    with warnings.catch_warnings():  # its optimizer's state is not used: both runs start a fresh one
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model = load_keras_model(args.user_model, compile=True)
    if isinstance(model, DynHPModel):
        raise RunError(f"--model {args.user_model} is already a DynHPModel: continue its training with "
                       "keras_dynhp.load_model() and fit(), or give the plain Keras model")
    return model


def _check_train_args(args, example_shape, num_classes):
    """Lambdas (one per gated layer), dense parameters and the DynHP budget; flag problems
    are UsageErrors."""
    from keras_dynhp import memory
    from keras_dynhp.batch_size import DynamicBatchSize
    from keras_dynhp.experiments import harness
    from keras_dynhp.penalty import SETTINGS

    input_dim = math.prod(example_shape)  # numbers per example
    lenet = args.arch == "lenet5"
    user = getattr(args, "user", None)
    n_layers = (len(_network(args, example_shape, num_classes, gated=True).gated_layers) if user is not None
                else 4 if lenet else len(args.hidden) + 1)
    if args.l0_lambda is None:
        args.l0_lambda = [SETTINGS[args.penalty]["l0_lambda"]]
    if args.droprate_init is None:
        args.droprate_init = SETTINGS[args.penalty]["droprate_init"]
    lambdas = args.l0_lambda
    if len(lambdas) not in (1, n_layers):
        where = (f"--model {args.user_model} ({n_layers} gated layers)" if user is not None else
                 "--arch lenet5 (its two convolutions and two dense layers)" if lenet else
                 f"--hidden {','.join(map(str, args.hidden))} (one per gated layer: the input and "
                 "each hidden layer)")
        raise UsageError(f"--lambda needs 1 or {n_layers} values for {where}; received {len(lambdas)}")
    lambdas = lambdas * n_layers if len(lambdas) == 1 else lambdas
    dense_params = (user.count_params() if user is not None
                    else _network(args, example_shape, num_classes, gated=False).count_params() if lenet
                    else harness.dense_params(input_dim, args.hidden, num_classes))
    args.lambdas = lambdas
    budget = None
    accounting = getattr(args, "accounting", "paper")
    if args.mode == "dynhp":
        footprint = None
        if accounting == "full":  # the LeNet's footprint in the full accounting (a model built, not trained)
            model = _network(args, example_shape, num_classes, gated=True)
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
        smallest = harness.dense_params(1, [1] * (n_layers - 1), num_classes)  # one unit per gated layer
        if args.model_budget < memory.network_bytes(smallest):
            raise UsageError(
                f"--model-budget {args.model_budget:,} bytes cannot be met: the smallest network with one "
                f"unit per gated layer stores {memory.network_bytes(smallest):,} bytes")
    return lambdas, dense_params, budget


def _without_history(record):
    return {k: v for k, v in record.items() if k != "history"}


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
             "accounting", "learning_rate_decay", "data", "arch", "user_model")

#: Flags added after run.json's format 1: a saved run without them takes their defaults, or
#: the value in RUN_FLAGS_BEFORE where the default changed since.
RUN_FLAGS_OPTIONAL = ("penalty", "model_budget", "accounting", "learning_rate_decay", "data", "arch",
                      "user_model")

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
    return os.path.join("runs", f"{data_name(args)}-{args.mode}")


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


def _model_checkpoint(path, history_path, args, example_shape, seconds):
    """`run_config`'s `resume` for the DynHP model of an interrupted run (None: no epoch saved)."""
    if not os.path.exists(path):
        return None
    from keras_dynhp.models import DynHPModel

    model = load_keras_model(path, compile=True)
    epoch = getattr(model, "training_state", {}).get("epoch") if isinstance(model, DynHPModel) else None
    if not isinstance(epoch, int) or not 0 < epoch <= args.epochs:
        raise RunError(f"cannot resume from {path}: the training-state check failed (not a "
                       f"{args.mode} model of 1 to {args.epochs} finished epochs saved by `{PROG} train`)")
    if tuple(model.input_shape_) != tuple(example_shape):
        raise RunError(f"cannot resume from {path}: the input-shape check failed (the model takes "
                       f"{tuple(model.input_shape_)}, {data_name(args)} examples are {tuple(example_shape)})")
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
    """Makes SIGTERM (a plain `kill`) stop `train` as Ctrl-C does; returns what puts things back.

    Python drops an exception raised where it cannot propagate (a `__del__`, a
    weakref or gc callback such as JAX's) and reports it to `sys.unraisablehook`:
    there the interrupt is delivered again instead of printed.
    """
    import signal
    import sys
    import threading

    global _TERMINATE_REQUESTED
    _TERMINATE_REQUESTED = False
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        global _TERMINATE_REQUESTED
        _TERMINATE_REQUESTED = True  # checked again after each saved epoch
        raise KeyboardInterrupt

    hook = sys.unraisablehook

    def swallowed(unraisable):
        if issubclass(unraisable.exc_type, KeyboardInterrupt) and _TERMINATE_REQUESTED:
            threading.Timer(0.05, signal.raise_signal, (signal.SIGTERM,)).start()
            return
        hook(unraisable)

    previous = signal.signal(signal.SIGTERM, interrupt)
    sys.unraisablehook = swallowed

    def restore():
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = hook

    return restore


#: Set by the SIGTERM handler of `train`: Python drops an exception raised while a `__del__`
#: or a C callback runs, so the epoch saver raises it again after the next saved epoch.
_TERMINATE_REQUESTED = False


def cmd_train(args):
    if args.resume is not None and args.overwrite:
        raise UsageError("give --resume (continue the run) or --overwrite (start it again), not both")
    if args.resume is not None:
        args, run = _resume_args(args)
        if run is None:  # finished
            return 0
    else:
        run = None
        _check_fresh_output(args.output or _default_output(args), args.overwrite)
    restore = _sigterm_as_interrupt()
    try:
        return _train(args, run)
    finally:
        restore()


def _train(args, run):
    """`train` (fresh when `run` is None, else resuming the run whose run.json is `run`)."""
    import keras

    import keras_dynhp.training
    from keras_dynhp import __version__, evaluation, memory
    from keras_dynhp._io import write_json
    from keras_dynhp.data import take_rows
    from keras_dynhp.experiments import harness

    resuming = run is not None
    output = args.output or _default_output(args)
    lenet = args.arch == "lenet5"
    args.user = _load_user_model(args) if args.user_model else None
    if args.user is not None:  # the inputs its first layer takes: rows or images
        wanted = tuple(int(d) for d in args.user.input_shape[1:])
        lenet = len(wanted) == 3
    (x, y), (xt, yt) = load_run_data(args, as_uint8=True, layout="images" if lenet else "rows")  # uint8 held
    example_shape, num_classes = tuple(int(d) for d in x.shape[1:]), int(max(y.max(), yt.max())) + 1
    if args.user is not None:
        if example_shape != wanted:
            raise RunError(f"--model {args.user_model} takes inputs of shape {wanted}; {data_name(args)} "
                           f"examples are {example_shape}")
        outputs = int(args.user.output_shape[-1])
        if outputs < num_classes:
            raise RunError(f"--model {args.user_model} has {outputs} outputs; {data_name(args)} has "
                           f"{num_classes} classes")
        num_classes = outputs
    input_dim = math.prod(example_shape)
    lambdas, dense_params, budget = _check_train_args(args, example_shape, num_classes)
    if args.user is not None:
        architecture_text = f"your model {args.user_model} ({args.user.name})"
        baseline_architecture = harness.dense_architecture(args.user, example_shape)
    elif args.arch == "lenet5":
        architecture_text = f"LeNet-5-Caffe on {'x'.join(map(str, example_shape))} images"
        baseline_architecture = harness.dense_architecture(
            _network(args, example_shape, num_classes, gated=False), example_shape)
    else:
        baseline_architecture = [input_dim, *args.hidden, num_classes]
        architecture_text = f"architecture {baseline_architecture}"
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
        x, y = take_rows(x, idx), y[idx]
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
        resume = _model_checkpoint(path("model.keras"), path("history.json"), args, example_shape,
                                   seconds.get("model", 0.0))
        done = resume["epoch"] if resume else 0
        _say(args, f"resuming {output}: " + (
            f"{label}, {done} of {args.epochs} epochs done, continuing at epoch {done + 1}"
            if done < args.epochs else f"{label} has finished its {args.epochs} epochs"))
    _say(args, f"{label} on {len(x):,} {data_name(args)} training images, {args.epochs} epochs: "
               f"{architecture_text} ({dense_params:,} parameters), "
               f"lambda {lambdas} ({args.penalty} penalty)"
         + (f", model budget {args.model_budget:,} bytes" if args.model_budget else "")
         + (f", budget {memory.kib(budget):.2f} KiB, initial batch {args.initial_batch_size}"
            if budget else f", batch {args.batch_size}")
         + f" (Keras backend: {keras.backend.backend()})")
    common = {"dataset": data_name(args), "hidden": args.hidden, "num_classes": num_classes, "arch": args.arch,
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
                tflite_path=path("model.tflite"), quantization=args.quantization, resume=resume,
                model=None if args.user is None or resume else _network(args, example_shape, num_classes, True))
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
            kind = (f"your model {args.user_model}, plainly" if args.user is not None
                    else "Keras LeNet-5-Caffe" if lenet else f"Keras Dense layers {hidden}")
            _say(args, f"dense baseline: {kind}, batch {args.batch_size}, "
                       f"{args.epochs} epochs"
                 + (f" ({resume['epoch']} done)" if resume else ""))
            baseline_saver = _epoch_saver(path("baseline.keras"),
                                          dict((resume or {}).get("history") or {}),
                                          path("baseline_history.json"), None,
                                          timer("baseline", resume))
            baseline = harness.run_config(
                "dense", args.batch_size, data, args.epochs, **common, callbacks=[baseline_saver],
                model_path=path("baseline.keras"), resume=resume,
                model=None if args.user is None or resume else _network(args, example_shape, num_classes, False))
            phase = "outputs"
        else:  # its size and memory only: the paper's accounting needs no training
            baseline = harness.new_record(
                "dense", args.batch_size, dataset=data_name(args), epochs=args.epochs,
                params=dense_params, architecture=baseline_architecture,
                model_bytes=memory.network_bytes(dense_params),
                training_bytes=args.epochs * memory.mo_bytes(dense_params, args.batch_size, input_dim),
                final_batch_size=args.batch_size)
            baseline["label"] += ", not trained"
        if args.user is not None:
            baseline["label"] = baseline["label"].replace("Dense Keras MLP", "Your Keras model")
        elif lenet:
            baseline["label"] = baseline["label"].replace("Keras MLP", "Keras LeNet-5")

        summary = {
            "keras_dynhp_version": __version__,
            "command": run.get("command") or getattr(args, "command_line", None),
            "config": {
                "dataset": data_name(args), "mode": args.mode, "arch": args.arch, "hidden": args.hidden,
                "user_model": args.user_model,
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
        print("\n".join(_notes(summary, result["history"], args.units)))
        print(f"\nwritten to {output}/: " + ", ".join(sorted(os.listdir(output))))
    return 0
