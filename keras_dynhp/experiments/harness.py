"""One run of one configuration and its result record: the harness of `train` and `reproduce`.

:func:`run_config` trains one configuration (soft pruning "sp", hard pruning
"hp", "dynhp", a plain "dense" Keras MLP or the "tfmot" magnitude-pruning peer)
on given data and returns one result record, a dict whose keys are
:data:`RESULT_KEYS` (documented in :func:`run_config`). `keras-dynhp train`
(:mod:`keras_dynhp.cli`) and the paper reproduction
(:mod:`keras_dynhp.experiments.reproduce`) both run through it, so their
results, `summary.json` and `results.json`, share one format.

With a `directory` a run is resumable:

- after every epoch, `state.json` (the history so far) and `ckpt_<epoch>.keras`
  (the model, optimizer included) are written, atomically, so a killed run
  resumes from its last finished epoch (DynHP's batch size, the running memory
  total and the gate noise carry on from the checkpoint; epoch e's shuffling
  order depends on (seed, e) only, so a resumed sp/hp/dynhp run ends with the
  same weights as an uninterrupted one on a deterministic backend; a resumed
  dense run reseeds Keras's own shuffling as a fresh run does, which gives the
  same weights on Keras 3.15 / TensorFlow 2.21, where that shuffling restarts
  from the global seed at every epoch);
- once finished, `result.json` (the record) and `model.tflite`; a directory
  holding `result.json` is never re-run: its record is returned.

Example:
    >>> LENET_PARAMS
    266610
    >>> label("dynhp", 0.98), config_id("sp", 128)
    ('DynHP a=0.980', 'sp_bs128')
    >>> record = run_config("dynhp", 0.98, ((x, y), (xt, yt)), 3,
    ...                     budget_bytes="1433KiB")              # doctest: +SKIP
"""

import glob
import itertools
import json
import os
import time

import numpy as np

from keras_dynhp import _keras_internals, memory
from keras_dynhp._io import save_keras, write_json

#: Methods :func:`run_config` runs.
METHODS = ("sp", "hp", "dynhp", "dense", "tfmot")
#: Methods trained as a gated :class:`keras_dynhp.DynHPModel`.
GATED_METHODS = ("sp", "hp", "dynhp")
#: The paper's network: LeNet-300-100 (784-300-100-10).
LENET_HIDDEN = (300, 100)

#: The keys of every result record, in order (see :func:`run_config`).
RESULT_KEYS = (
    "label", "method", "value", "config", "dataset", "epochs", "error_pct", "test_accuracy",
    "params", "architecture", "model_bytes", "training_bytes", "final_batch_size", "budget_bytes",
    "tflite_bytes", "seconds", "history", "penalty", "model_budget_bytes", "delivered_bytes",
    "validation", "val_error_pct",
)
#: The extra keys of a "tfmot" record.
TFMOT_KEYS = ("nonzero_params", "tflite_gzip_bytes", "target_sparsity")

# Key names of result.json files written before the keys were unified.
_OLD_KEYS = {"error": "error_pct", "training_memory_bytes": "training_bytes"}


def dense_params(input_dim, hidden, num_classes):
    """Weights and biases of a dense MLP `input_dim`-`hidden`...-`num_classes`.

    Example:
        >>> dense_params(784, (300, 100), 10)
        266610
    """
    widths = [int(input_dim), *(int(u) for u in hidden), int(num_classes)]
    return sum((a + 1) * b for a, b in itertools.pairwise(widths))


#: Stored parameters of LeNet-300-100, the paper's dense reference.
LENET_PARAMS = dense_params(784, LENET_HIDDEN, 10)


class ExportError(ValueError):
    """The trained model could not be written as a `.tflite` file (e.g. a bad quantization)."""


def config_id(method, value):
    """Directory name of one configuration, e.g. `sp_bs128`, `dynhp_a0.980`."""
    if method == "dynhp":
        return f"dynhp_a{value:.3f}"
    if method in ("sp", "hp", "dense", "tfmot"):
        return f"{method}_bs{int(value)}"
    raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}.")


def label(method, value):
    """Row label in the paper's style, e.g. "SP (bs 128)", "DynHP a=0.980"."""
    if method == "dynhp":
        return f"DynHP a={value:.3f}" if round(value, 3) == value else f"DynHP a={value:g}"
    names = {"sp": "SP", "hp": "HP", "dense": "Dense Keras MLP", "tfmot": "tfmot magnitude"}
    if method not in names:
        raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}.")
    return f"{names[method]} (bs {int(value)})"


def new_record(method, value, **fields):
    """A result record: every key of :data:`RESULT_KEYS`, None unless given in `fields`.

    `label` and `config` default to :func:`label` and :func:`config_id`;
    `error_pct` defaults to `100 * (1 - test_accuracy)` when the accuracy is given.
    """
    unknown = sorted(set(fields) - set(RESULT_KEYS) - set(TFMOT_KEYS))
    if unknown:
        raise ValueError(f"Unknown result keys {unknown}; expected {RESULT_KEYS + TFMOT_KEYS}.")
    record = dict.fromkeys(RESULT_KEYS)
    record.update(label=label(method, value), method=method, value=value,
                  config=config_id(method, value))
    record.update(fields)
    if record["error_pct"] is None and record["test_accuracy"] is not None:
        record["error_pct"] = 100.0 * (1.0 - record["test_accuracy"])
    return record


def read_result(path):
    """A record from a `result.json`; files of older versions get the unified key names."""
    with open(path) as f:
        record = json.load(f)
    for old, new in _OLD_KEYS.items():
        if old in record and new not in record:
            record[new] = record.pop(old)
    if record.get("test_accuracy") is None and record.get("error_pct") is not None:
        record["test_accuracy"] = 1.0 - record["error_pct"] / 100.0
    history = record.get("history") or {}
    if "error" in history and "val_accuracy" not in history:  # old: test error % per epoch
        history["val_accuracy"] = [None if e is None else 1.0 - e / 100.0 for e in history.pop("error")]
    return record


def finished(directory):
    """Creates a configuration's directory; returns its record if it already finished, else None."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "result.json")
    return read_result(path) if os.path.exists(path) else None


#: The networks `run_config` trains: LeNet-300-100-style MLPs (`hidden`) or LeNet-5-Caffe.
ARCHITECTURES = ("mlp", "lenet5")


def build_dense_lenet5(input_shape, num_classes, learning_rate, seed):
    """The dense baseline of `arch="lenet5"`: a plain Keras LeNet-5-Caffe (20-50-800-500).

    `Conv2D(20, 5)` -> max-pool 2 -> `Conv2D(50, 5)` -> max-pool 2 -> Flatten ->
    `Dense(500)` -> `Dense(num_classes)`, ReLU inside, Adam; layer i's kernel seeded
    with `seed + i`, as in :func:`keras_dynhp.build_lenet5`.
    """
    import keras

    def init(i):
        return keras.initializers.GlorotUniform(seed=seed + i)

    model = keras.Sequential([
        keras.Input(tuple(input_shape), name="images"),
        keras.layers.Conv2D(20, 5, activation="relu", kernel_initializer=init(0), name="conv_0"),
        keras.layers.MaxPooling2D(2, name="pool_0"),
        keras.layers.Conv2D(50, 5, activation="relu", kernel_initializer=init(1), name="conv_1"),
        keras.layers.MaxPooling2D(2, name="pool_1"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(500, activation="relu", kernel_initializer=init(2), name="dense_2"),
        keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=init(3), name="dense_3"),
    ], name="dense_lenet5")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def dense_architecture(model, input_shape):
    """Widths of a plain Keras baseline, as `DynHPModel.architecture()` lists a gated one:
    the input's width (channels for images), each layer's outputs, and for the last
    convolution its flattened features (what the next dense layer's gates see).

    Example:
        >>> dense_architecture(build_dense([300, 100], 784, 10, 1e-3, 0), (784,))
        [784, 300, 100, 10]
    """
    import keras

    widths = [int(input_shape[-1])]
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            widths.append(int(layer.filters))
        elif isinstance(layer, keras.layers.Flatten):
            widths[-1] = int(np.prod(layer.output.shape[1:]))
        elif isinstance(layer, keras.layers.Dense):
            widths.append(int(layer.units))
    return widths


def build_dense(hidden, input_dim, num_classes, learning_rate, seed):
    """The dense baseline: a compiled Keras MLP (ReLU, softmax), Adam, seeded Glorot kernels.

    Layer i's kernel initializer is seeded with `seed + i`, as in
    :func:`keras_dynhp.build_mlp`.
    """
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


# ------------------------------------------------------------------ checkpoints
def _number(value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    return float(value)


def _remove_checkpoints(directory, keep=None):
    for old in glob.glob(os.path.join(directory, "ckpt_*.keras")):
        if os.path.basename(old) != keep:
            os.remove(old)


def _epoch_checkpoint(directory, state, start_time):
    """A callback that records every epoch's logs in `state`; with a directory, also saves
    the model and `state.json` (atomically) after every epoch."""
    import keras

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                state["history"].setdefault(key, []).append(_number(value))
            state["epochs_done"] = epoch + 1
            state["seconds"] = state["seconds_before"] + time.perf_counter() - start_time
            if directory is None:
                return
            path = os.path.join(directory, f"ckpt_{epoch + 1}.keras")
            save_keras(self.model, path)
            state["checkpoint"] = os.path.basename(path)
            write_json(os.path.join(directory, "state.json"), state)
            _remove_checkpoints(directory, keep=state["checkpoint"])

    return Checkpoint()


def _saved_state(directory):
    """The state.json of an interrupted run whose checkpoint still exists, else None."""
    if directory is None:
        return None
    path = os.path.join(directory, "state.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        state = json.load(f)
    checkpoint = state.get("checkpoint")
    return state if checkpoint and os.path.isfile(os.path.join(directory, checkpoint)) else None


def _export(model, path, quantization, x):
    from keras_dynhp import export

    quantization = None if quantization in (None, "float") else quantization
    try:  # int8 calibrates on `x` through export.calibration_samples
        export.export_tflite(model, path, quantization=quantization, representative_data=x)
    except ValueError as e:  # an untrained model, or a quantization this version lacks
        raise ExportError(str(e)) from e
    return os.path.getsize(path)


# ------------------------------------------------------------------ one run
def run_config(method, value, data, epochs, directory=None, *, dataset=None, hidden=LENET_HIDDEN,
               num_classes=None, l0_lambda=0.01, gamma=0.5, droprate_init=0.5, learning_rate=1e-3,
               budget_bytes=None, initial_batch_size=16, variance_every=1, sparsity=None, seed=0,
               verbose=2, callbacks=(), model_path=None, compact_path=None, tflite_path=None,
               quantization=None, resume=None, penalty="louizos", model_budget=None, tag=None,
               accounting="paper", learning_rate_decay=None, validation=None, arch="mlp",
               model=None):
    """Trains one configuration and returns its result record.

    "sp", "hp" and "dynhp" train :func:`keras_dynhp.build_mlp` with
    `DynHPModel.fit`; "dense" trains :func:`build_dense`; "tfmot" runs
    :func:`keras_dynhp.experiments.tfmot_peer.run_tfmot` (a subprocess on
    `tf_keras`). Models are built right after `keras.utils.set_random_seed(seed)`.

    Args:
        method: "sp", "hp", "dynhp", "dense" or "tfmot".
        value: The batch size (sp, hp, dense, tfmot) or alpha_bs (dynhp).
        data: `((x, y), (xt, yt))`: training and test arrays, one row per example.
        epochs: Total epochs (a resumed run trains the missing ones).
        directory: The configuration's directory (resumable run, see the module
            docstring), or None: nothing is written but the paths below.
        dataset: Name of the data set, recorded in the result.
        hidden: Hidden layer widths (`arch="mlp"`).
        arch: "mlp" (:func:`keras_dynhp.build_mlp` with `hidden`; dense
            baseline :func:`build_dense`; inputs one row per example) or
            "lenet5" (:func:`keras_dynhp.build_lenet5`; dense baseline
            :func:`build_dense_lenet5`; inputs images, channels last).
        model: A built, compiled model to train instead of building one (a
            user's own: a DynHPModel from :func:`keras_dynhp.prune` for
            sp/hp/dynhp, a plain Keras model for "dense"); `hidden`, `arch`,
            `l0_lambda`, `droprate_init`, `learning_rate` and `penalty` are
            then its own.
        num_classes: Output classes (default: the largest label + 1).
        l0_lambda: L0 strength, one value or one per gated layer (sp/hp/dynhp).
        gamma: Hard-pruning threshold (hp/dynhp).
        droprate_init: Initial drop rate of the gates (sp/hp/dynhp).
        learning_rate: Adam learning rate.
        learning_rate_decay: sp/hp/dynhp: `fit`'s `learning_rate_decay`; None
            (the default here) is the paper's constant rate, "cosine" the
            library's default.
        budget_bytes: DynHP memory budget, bytes or a string such as "1433KiB".
        initial_batch_size: DynHP batch size of the first epoch.
        variance_every: DynHP measures the gradient variance every k steps.
        sparsity: Target weight sparsity of "tfmot" (required there).
        penalty: L0 penalty weighting of sp/hp/dynhp, "louizos" (the paper's)
            or "size" (:mod:`keras_dynhp.penalty`).
        accounting: What DynHP's `budget_bytes` counts, "paper" or "full"
            (:func:`keras_dynhp.memory.full_accounting`).
        model_budget: Model-size budget of sp/hp/dynhp: bytes, a string such
            as "250KB" or a :class:`keras_dynhp.ModelBudget`.
        tag: Text appended to the record's label (e.g. "size, model 250 KB").
        seed: Seed of the initialisation and the shuffling.
        validation: None (the paper's protocol: the test set is shown every
            epoch, nothing is chosen from it here) or a number of images: the
            last ones of the training set are held out and validated on
            every epoch instead (the record's `val_error_pct`, what a choice
            between runs may look at); the test set is then evaluated once,
            at the end.
        verbose: Keras verbosity.
        callbacks: More Keras callbacks for `fit`.
        model_path: Also save the trained model there (`.keras`).
        compact_path: sp/hp/dynhp: also save the gate-free compact model there
            (:func:`keras_dynhp.strip`).
        tflite_path: Write the `.tflite` file there (default
            `directory/model.tflite`; no file when both are None).
        quantization: Of the `.tflite` file: None/"float", "dynamic", "float16"
            or "int8" (calibrated on training images, `export.calibration_samples`).
        resume: Continue a run from a checkpoint instead of building a model: a
            dict with `model` (the loaded model, optimizer included), `epoch`
            (the epochs it has finished), `history` (its history so far; cut to
            `epoch` entries) and optionally `seconds` (its training time so far).
            `keras-dynhp train --resume` passes it. Ignored when `directory`
            holds a checkpoint of its own.

    Returns:
        The result record (also `directory/result.json`), a dict with:

        - `label`: row label, e.g. "DynHP a=0.980" (:func:`label`);
        - `method`, `value`: the arguments;
        - `config`: directory name, e.g. "dynhp_a0.980" (:func:`config_id`);
        - `dataset`: the data set's name (None if not given);
        - `epochs`: epochs trained (over every resumed part);
        - `error_pct`: test error in percent after the last pruning, `100 * (1 - test_accuracy)`;
        - `validation`, `val_error_pct`: the held-out images and the last epoch's
          error on them (None without `validation`);
        - `test_accuracy`: test accuracy in [0, 1] (:func:`keras_dynhp.evaluation.accuracy`);
        - `params`: weights and biases the final model stores;
        - `architecture`: layer widths, input first, e.g. [784, 300, 100, 10];
        - `model_bytes`: 4 bytes per stored parameter (the paper's model size);
        - `training_bytes`: the paper's training memory: the sum over epochs of
          MO = 4 * (stored parameters + batch size * input width);
        - `final_batch_size`: batch size of the last epoch;
        - `budget_bytes`: DynHP memory budget (None for the other methods);
        - `tflite_bytes`: size of the `.tflite` file (None when none was written);
        - `seconds`: training wall time (fit only, summed over resumed parts);
        - `penalty`, `model_budget_bytes`: the settings (None for the peers);
        - `delivered_bytes`: bytes of the compact model `keras_dynhp.strip`
          makes (for sp smaller than `model_bytes` when gates closed);
        - `history`: per-epoch lists: Keras's logs (`loss`, `accuracy`,
          `val_loss`, `val_accuracy`, ...), `DynHPModel.fit`'s pruning and
          memory figures (see its docstring; the dense baseline gets `params`,
          `network_bytes`, `batch_size`, `mo_bytes`), and `memory_total_bytes`,
          the running sum of `mo_bytes` over all epochs.

        A "tfmot" record also has `nonzero_params` (non-zero stored weights and
        biases), `tflite_gzip_bytes` (the gzipped `.tflite` file) and
        `target_sparsity`. For "tfmot", None when `tensorflow-model-optimization`
        or `tf_keras` is not installed (a message says so).

    Raises:
        ExportError: The `.tflite` file could not be written (the model and
            `model_path` are kept).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}.")
    if directory is not None:
        done = finished(directory)
        if done is not None:
            if dataset is not None:
                done["dataset"] = dataset
            return done
    if arch not in ARCHITECTURES:
        raise ValueError(f"`arch` must be one of {ARCHITECTURES}; received {arch!r}.")
    if method == "tfmot":
        if arch != "mlp":
            raise ValueError('method="tfmot" trains MLPs only (`arch="mlp"`).')
        from keras_dynhp.experiments import tfmot_peer

        if sparsity is None:
            raise ValueError('method="tfmot" needs `sparsity`.')
        return tfmot_peer.run_tfmot(data, epochs, int(value), sparsity, directory, hidden=hidden,
                                    learning_rate=learning_rate, seed=seed, dataset=dataset)

    from keras_dynhp import export
    from keras_dynhp.data import take_rows
    from keras_dynhp.evaluation import accuracy
    from keras_dynhp.models import build_lenet5, build_mlp, load_model  # also registers the saved classes

    gated = method in GATED_METHODS
    (x, y), (xt, yt) = data
    if validation:
        validation = int(validation)
        if not 0 < validation < len(x):
            raise ValueError(f"`validation` must be between 1 and {len(x) - 1} images; received {validation}.")
        xv, yv = take_rows(x, slice(-validation, None)), y[-validation:]
        x, y = take_rows(x, slice(None, -validation)), y[:-validation]
    else:
        validation, xv, yv = None, xt, yt  # the paper's protocol: the test set, shown only
    example_shape = tuple(int(d) for d in x.shape[1:])
    input_dim = int(np.prod(example_shape))  # numbers per example (the paper's batch memory)
    if model is None and arch == "lenet5" and len(example_shape) != 3:
        raise ValueError(f'arch="lenet5" needs images (n, height, width, channels); received {x.shape}.')
    if num_classes is None:
        num_classes = int(max(np.max(y), np.max(yt))) + 1
    if budget_bytes is not None:
        budget_bytes = memory.parse_bytes(budget_bytes)

    state = _saved_state(directory)
    if state is not None:
        model = load_model(os.path.join(directory, state["checkpoint"]))
        initial_epoch = state["epochs_done"]
        if method == "dynhp":
            initial_batch_size = int(state["history"]["next_batch_size"][-1])
        print(f"[harness] resuming {os.path.basename(os.path.normpath(directory))} "
              f"at epoch {initial_epoch + 1}", flush=True)
    elif resume is not None:
        model, initial_epoch = resume["model"], int(resume["epoch"])
        history = {k: list(v[:initial_epoch]) for k, v in (resume.get("history") or {}).items()}
        state = {"history": history, "epochs_done": initial_epoch,
                 "seconds": float(resume.get("seconds") or 0.0)}
        if method == "dynhp" and len(history.get("next_batch_size", [])) == initial_epoch > 0:
            initial_batch_size = int(history["next_batch_size"][-1])
    elif model is not None:  # the caller's model, as it is
        _keras_internals.set_random_seed(seed)  # a JAX run keeps TensorFlow unloaded
        state = {"history": {}, "epochs_done": 0, "seconds": 0.0}
        initial_epoch = 0
    else:
        _keras_internals.set_random_seed(seed)  # a JAX run keeps TensorFlow unloaded
        if gated and arch == "lenet5":
            model = build_lenet5(example_shape, num_classes=num_classes, l0_lambda=l0_lambda,
                                 droprate_init=droprate_init, learning_rate=learning_rate, seed=seed,
                                 penalty=penalty)
        elif gated:
            model = build_mlp(list(hidden), input_dim=input_dim, num_classes=num_classes,
                              l0_lambda=l0_lambda, droprate_init=droprate_init,
                              learning_rate=learning_rate, seed=seed, penalty=penalty)
        elif arch == "lenet5":
            model = build_dense_lenet5(example_shape, num_classes, learning_rate, seed)
        else:
            model = build_dense(list(hidden), input_dim, num_classes, learning_rate, seed)
        state = {"history": {}, "epochs_done": 0, "seconds": 0.0}
        initial_epoch = 0

    if initial_epoch > 0:
        # Seeded as a fresh run is: Keras's own shuffling of the dense model (fit(shuffle=True))
        # draws from the global seed. sp/hp/dynhp shuffle by (seed, epoch) and keep their gate
        # noise state in the checkpoint.
        _keras_internals.set_random_seed(seed)  # a JAX run keeps TensorFlow unloaded
    state["seconds_before"] = state["seconds"]
    fit_callbacks = [_epoch_checkpoint(directory, state, time.perf_counter()), *callbacks]
    common = {"epochs": epochs, "initial_epoch": initial_epoch, "validation_data": (xv, yv),
              "verbose": verbose, "callbacks": fit_callbacks}
    if gated and model_budget is not None:
        common["model_budget"] = model_budget
    if gated:
        common["learning_rate_decay"] = learning_rate_decay
    if initial_epoch < epochs:
        if not gated:  # plain Keras: float32 arrays once (a ScaledArray would be converted every epoch)
            x, common["validation_data"] = np.asarray(x, "float32"), (np.asarray(xv, "float32"), yv)
            model.fit(x, y, batch_size=int(value), **common)
        elif method == "dynhp":
            model.fit(x, y, mode=method, gamma=gamma, seed=seed, alpha_bs=value,
                      memory_budget=budget_bytes, initial_batch_size=initial_batch_size,
                      variance_every=variance_every, accounting=accounting, **common)
        else:
            model.fit(x, y, mode=method, gamma=gamma, seed=seed, batch_size=int(value), **common)

    history = dict(state["history"])
    if gated:
        params, architecture = model.count_params_stored(), model.architecture()
    else:
        params = model.count_params()
        architecture = dense_architecture(model, example_shape)
        n = len(history.get("loss", []))
        mo = memory.mo_bytes(params, int(value), input_dim)
        history.update(params=[params] * n, network_bytes=[memory.network_bytes(params)] * n,
                       batch_size=[int(value)] * n, mo_bytes=[mo] * n)
    # Running sum over *all* epochs, including those before a resume.
    history["memory_total_bytes"] = np.cumsum(history.get("mo_bytes", [])).tolist()

    if model_path is not None:
        save_keras(model, model_path)
    if compact_path is not None and gated:
        save_keras(export.strip(model), compact_path)
    test_accuracy = accuracy(model, xt, yt)
    if tflite_path is None and directory is not None:
        tflite_path = os.path.join(directory, "model.tflite")
    record = new_record(
        method, value,
        dataset=dataset,
        epochs=len(history["memory_total_bytes"]),
        test_accuracy=test_accuracy,
        params=params,
        architecture=architecture,
        model_bytes=memory.network_bytes(params),
        training_bytes=history["memory_total_bytes"][-1] if history["memory_total_bytes"] else 0,
        final_batch_size=int(history["batch_size"][-1]) if history.get("batch_size") else None,
        budget_bytes=budget_bytes if method == "dynhp" else None,
        tflite_bytes=None if tflite_path is None else _export(model, tflite_path, quantization, x),
        seconds=state["seconds"],
        history=history,
        penalty=model.penalty if gated else None,
        model_budget_bytes=(None if not gated or model_budget is None
                            else getattr(model_budget, "max_bytes", None) or memory.parse_bytes(model_budget)),
        delivered_bytes=model.delivered_bytes() if gated else memory.network_bytes(params),
        validation=validation,
        val_error_pct=(100.0 * (1.0 - history["val_accuracy"][-1])
                       if validation and history.get("val_accuracy") else None),
    )
    if tag:
        record["label"] += f", {tag}"
    if directory is not None:
        write_json(os.path.join(directory, "result.json"), record)
        _remove_checkpoints(directory)
    return record
