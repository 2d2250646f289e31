"""`DynHPModel`: a stack of gated dense layers trained with SP, HP or DynHP.

The training loop composes the other modules: gates (:mod:`keras_dynhp.layers`),
surgery (:mod:`keras_dynhp.surgery`), batch-size control
(:mod:`keras_dynhp.batch_size`), memory accounting (:mod:`keras_dynhp.memory`)
and pipelines (:mod:`keras_dynhp.data`). Each epoch is one call of Keras's own
`fit`, so progress bars, metrics, validation and callbacks behave as usual;
between epochs the model is pruned and the pipeline rebuilt when needed.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_dynhp import memory, surgery
from keras_dynhp.batch_size import DynamicBatchSize, gradient_variance_l1
from keras_dynhp.data import is_batched, make_dataset
from keras_dynhp.layers import FeatureSelect, L0Dense

MODES = ("sp", "hp", "dynhp")


class _Forwarder(keras.callbacks.Callback):
    """Forwards per-batch and validation events of an inner one-epoch `fit`.

    Train begin/end and epoch end are driven by `DynHPModel.fit` itself, so
    user callbacks see one training run and the epoch-end logs include the
    pruning and memory figures.
    """

    def __init__(self, callback_list):
        super().__init__()
        self.callback_list = callback_list

    def on_epoch_begin(self, epoch, logs=None):
        self.callback_list.on_epoch_begin(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self.callback_list.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.callback_list.on_train_batch_end(batch, logs)

    def on_test_begin(self, logs=None):
        self.callback_list.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.callback_list.on_test_end(logs)

    def on_test_batch_begin(self, batch, logs=None):
        self.callback_list.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self.callback_list.on_test_batch_end(batch, logs)


@keras.saving.register_keras_serializable(package="keras_dynhp")
class DynHPModel(keras.Model):
    """A chain of :class:`L0Dense` layers that can hard-prune itself while training.

    The first layer's gates sit on the input features; pruned features are
    dropped by a fixed :class:`FeatureSelect` in front, so the model always
    accepts `input_dim`-wide inputs.

    Args:
        gated_layers: List of :class:`L0Dense` layers (or their serialised
            configs); layer l + 1's input units are layer l's output units.
        input_dim: Width of the inputs.
        input_indices: Surviving input features (None: all).
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Example:
        >>> model = DynHPModel([L0Dense(8, "relu"), L0Dense(3)], input_dim=5)
        >>> model.count_params_stored()
        75
    """

    def __init__(self, gated_layers, input_dim, input_indices=None, **kwargs):
        super().__init__(**kwargs)
        if not gated_layers:
            raise ValueError("`gated_layers` must contain at least one L0Dense layer.")
        layers = [
            keras.saving.deserialize_keras_object(layer) if isinstance(layer, dict) else layer
            for layer in gated_layers
        ]
        for layer in layers:
            if not isinstance(layer, L0Dense):
                raise ValueError(
                    f"DynHPModel takes L0Dense layers only; received {type(layer).__name__}."
                )
        self.input_dim = int(input_dim)
        self.feature_select = FeatureSelect(self.input_dim, input_indices, name="feature_select")
        self.gated_layers = layers
        self._measure_variance = False
        self._variance_metrics = False  # ||S||_1 and F are listed in `metrics`
        self._variance_every = 1
        self.variance_tracker = keras.metrics.Mean(name="grad_var_l1")
        self.data_loss_tracker = keras.metrics.Mean(name="data_loss")
        self.build((None, self.input_dim))

    @property
    def metrics(self):
        # ||S||_1 and F are DynHP training figures: hidden outside a DynHP fit,
        # so `evaluate` returns only the loss and the compiled metrics.
        metrics = super().metrics
        if not self._variance_metrics:
            metrics = [m for m in metrics if m is not self.variance_tracker and m is not self.data_loss_tracker]
        return metrics

    # ------------------------------------------------------------ structure
    def build(self, input_shape):
        if input_shape[-1] != self.input_dim:
            raise ValueError(
                f"DynHPModel expects inputs of width {self.input_dim}; received shape "
                f"{tuple(input_shape)}."
            )
        shape = (None, self.feature_select.output_dim)
        for layer in self.gated_layers:
            if not layer.built:
                layer.build(shape)
            shape = (None, layer.units)
        self.built = True

    def call(self, inputs, training=None, return_cache=False):
        if len(inputs.shape) != 2 or (inputs.shape[-1] is not None and inputs.shape[-1] != self.input_dim):
            raise ValueError(
                f"DynHPModel expects inputs of shape (batch, {self.input_dim}); received "
                f"shape {tuple(inputs.shape)}."
            )
        x = self.feature_select(inputs)
        caches = []
        for layer in self.gated_layers:
            if return_cache:
                x, cache = layer(x, training=training, return_cache=True)
                caches.append(cache)
            else:
                x = layer(x, training=training)
        return (x, caches) if return_cache else x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.gated_layers[-1].units)

    def units(self):
        """Gated input units per layer (the actual, physical sizes)."""
        return [layer.input_dim for layer in self.gated_layers]

    def architecture(self):
        """Layer widths from input to output, e.g. [784, 300, 100, 10]."""
        return self.units() + [self.gated_layers[-1].units]

    def count_params_stored(self):
        """Weights + biases stored by the network (the paper's parameter count)."""
        return sum(layer.num_params() for layer in self.gated_layers)

    def network_bytes(self):
        """Bytes of the network in the paper's accounting."""
        return memory.network_bytes(self.count_params_stored())

    def l0_penalty(self):
        """Total expected-L0 penalty of the gated layers (float)."""
        return float(sum(ops.convert_to_numpy(layer.l0_penalty()) for layer in self.gated_layers))

    def expected_active_units(self):
        """sum_j P(z_j > 0) per gated layer."""
        return [float(ops.convert_to_numpy(layer.expected_active_units())) for layer in self.gated_layers]

    def invalidate_functions(self):
        """Forgets traced train/test/predict functions (after shapes changed)."""
        self.train_function = None
        self.test_function = None
        self.predict_function = None

    def get_config(self):
        config = {
            "name": self.name,
            "gated_layers": [keras.saving.serialize_keras_object(layer) for layer in self.gated_layers],
            "input_dim": self.input_dim,
            "input_indices": self.feature_select.indices,
        }
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ----------------------------------------------------------- train step
    def train_step(self, data):
        if not self._measure_variance:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred, caches = self(x, training=True, return_cache=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            penalty = ops.sum(ops.stack(self.losses)) if self.losses else 0.0
        variables = self.trainable_weights
        preacts = [h for _, h in caches]
        grads = tape.gradient(loss, variables + preacts)
        self.optimizer.apply_gradients(zip(grads[: len(variables)], variables))
        batch = ops.shape(x)[0]
        inputs, preact_grads = [a for a, _ in caches], grads[len(variables):]
        if self._variance_every == 1:  # the default: no branch, no weights
            self.variance_tracker.update_state(gradient_variance_l1(inputs, preact_grads, batch))
            self.data_loss_tracker.update_state(loss - penalty)
        else:  # measured every `variance_every` steps (weight 0 elsewhere)
            measure = ops.equal(ops.mod(self.optimizer.iterations - 1, self._variance_every), 0)
            s_l1 = ops.cond(
                measure,
                lambda: gradient_variance_l1(inputs, preact_grads, batch),
                lambda: ops.zeros((), "float32"),
            )
            weight = ops.cast(measure, "float32")
            self.variance_tracker.update_state(s_l1, sample_weight=weight)
            self.data_loss_tracker.update_state(loss - penalty, sample_weight=weight)
        # Same bookkeeping as Keras's own train_step.
        self._loss_tracker.update_state(loss, sample_weight=batch)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_data=None,
        shuffle=True,
        initial_epoch=0,
        mode="sp",
        gamma=0.5,
        min_units=1,
        prune_start_epoch=0,
        alpha_bs=0.98,
        memory_budget=None,
        initial_batch_size=16,
        variance_every=1,
        seed=None,
        validation_batch_size=None,
    ):
        """Trains with soft pruning (`sp`), hard pruning (`hp`) or DynHP (`dynhp`).

        Args:
            x: NumPy inputs of shape (n, input_dim), or a `tf.data.Dataset` of
                `(x, y)`; for `dynhp` the dataset must be *unbatched* (it is
                re-batched every epoch).
            y: NumPy integer labels (None when `x` is a dataset).
            batch_size: Batch size for `sp`/`hp` (default 32).
            epochs: Number of epochs.
            verbose: 0, 1 (progress bar), 2 (one line per epoch) or "auto".
            callbacks: Keras callbacks; they see one training run whose epoch-end
                logs include pruning and memory figures (see below).
            validation_data: `(x_val, y_val)` or a batched dataset. Validation
                runs at the end of each epoch *before* that epoch's surgery.
            shuffle: Shuffle training arrays every epoch.
            initial_epoch: Epoch to start from (for resuming).
            mode: "sp", "hp" or "dynhp".
            gamma: Hard-pruning threshold on activation rates (eq. 7).
            min_units: No gated layer drops below this many input units.
            prune_start_epoch: First epoch (0-based) at whose end pruning happens.
            alpha_bs: DynHP smoothing parameter in [0, 1) (eq. 8).
            memory_budget: DynHP budget, bytes or a string like "1433KiB".
            initial_batch_size: DynHP batch size of the first epoch.
            variance_every: DynHP measures gradient variance every k steps.
            seed: Seed of the shuffling.
            validation_batch_size: Batch size for validation arrays (default 256).

        Returns:
            A `keras.callbacks.History`. Per epoch it records `loss`, metrics,
            `l0_penalty`, `expected_active_<l>` and `units_<l>` (gated input units
            of layer l), `pruned_<l>`, `params`, `network_bytes`, `batch_size`,
            `batch_bytes`, `mo_bytes` (network + batch, in the epoch),
            `memory_total_bytes` (running sum of MO), `surgery_ms`; for `dynhp`
            also `grad_var_l1` (||S||_1), `data_loss` (F), `budget_bytes` and
            `budget_headroom_bytes`.

        Raises:
            ValueError: For an unknown mode, bad arguments or inputs of the wrong
                shape, and when the budget cannot hold the initial network and batch.
        """
        if mode not in MODES:
            raise ValueError(f"Unknown `mode`={mode!r}; expected one of {MODES}.")
        if self.optimizer is None or not self.compiled:
            raise ValueError("Compile the model before calling `fit` (build_mlp compiles it for you).")
        if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 0:
            raise ValueError(f"`epochs` must be a non-negative integer; received {epochs!r}.")
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"`gamma` must be in [0, 1]; received gamma={gamma!r}.")
        if isinstance(min_units, bool) or int(min_units) != min_units or min_units < 1:
            raise ValueError(f"`min_units` must be an integer >= 1; received min_units={min_units!r}.")
        controller = None
        if mode == "dynhp":
            if memory_budget is None:
                raise ValueError('mode="dynhp" needs a `memory_budget` (bytes or e.g. "1433KiB").')
            controller = DynamicBatchSize(alpha_bs, memory_budget, initial_batch_size, variance_every)
            controller.check_fits(self.count_params_stored(), self.input_dim)
            batch = controller.initial_batch_size
        else:
            batch = 32 if batch_size is None else batch_size
            if isinstance(batch, bool) or int(batch) != batch or batch <= 0:
                raise ValueError(f"`batch_size` must be a positive integer; received {batch_size!r}.")
            batch = int(batch)
        verbose = 1 if verbose == "auto" else int(verbose)

        pipeline = self._make_pipeline(x, y, mode, shuffle, seed)
        n_train = pipeline["n"]
        self._set_dataset_size(n_train)
        val = self._make_validation(validation_data, validation_batch_size)

        measure = mode == "dynhp"
        if measure != self._measure_variance or (measure and self._variance_every != controller.variance_every):
            self._measure_variance = measure
            self._variance_every = controller.variance_every if controller else 1
            self.train_function = None
        if measure != self._variance_metrics:
            self._variance_metrics = measure
            self.test_function = None

        history = keras.callbacks.History()
        user_callbacks = list(callbacks or [])
        callback_list = keras.callbacks.CallbackList(
            user_callbacks + [history],
            add_progbar=verbose != 0,
            verbose=verbose,
            epochs=epochs,
            steps=pipeline["steps"](batch),
            model=self,
        )
        total_bytes = 0
        self.stop_training = False
        callback_list.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            steps = pipeline["steps"](batch)
            callback_list.set_params({"verbose": verbose, "epochs": epochs, "steps": steps})
            for layer in self.gated_layers:
                layer.reset_gate_stats()
            params_in_epoch = self.count_params_stored()
            inner = super().fit(
                pipeline["dataset"](batch),
                epochs=epoch + 1,
                initial_epoch=epoch,
                verbose=0,
                callbacks=[_Forwarder(callback_list)],
                validation_data=val,
                shuffle=False,  # the pipeline shuffles (seeded) itself
            )
            logs = {
                k: v[-1]
                for k, v in inner.history.items()
                if v and k not in ("val_grad_var_l1", "val_data_loss")  # training-only figures
            }
            if not logs:  # the epoch was stopped before it logged anything
                break
            mo = memory.mo_bytes(params_in_epoch, batch, self.input_dim)
            total_bytes += mo
            logs.update(
                {
                    "l0_penalty": self.l0_penalty(),
                    "batch_size": batch,
                    "batch_bytes": memory.batch_bytes(batch, self.input_dim),
                    "mo_bytes": mo,
                    "memory_total_bytes": total_bytes,
                }
            )
            report = None
            if mode in ("hp", "dynhp") and epoch >= prune_start_epoch:
                report = surgery.prune_model(self, gamma=gamma, min_units=min_units)
            for i, (units, active) in enumerate(zip(self.units(), self.expected_active_units())):
                logs[f"units_{i}"] = units
                logs[f"expected_active_{i}"] = active
                logs[f"pruned_{i}"] = report["pruned"][i] if report else 0
            logs["params"] = self.count_params_stored()
            logs["network_bytes"] = self.network_bytes()
            logs["surgery_ms"] = 1000.0 * report["seconds"] if report else 0.0
            if controller is not None:
                s_l1 = float(logs.get("grad_var_l1", 0.0))
                f = float(logs.get("data_loss", 0.0))
                new_batch = controller.next_batch_size(batch, s_l1, f, self.count_params_stored(), self.input_dim)
                logs["next_batch_size"] = new_batch
                logs["budget_bytes"] = controller.budget_bytes
                logs["budget_headroom_bytes"] = controller.budget_bytes - mo
                batch = new_batch
            else:
                logs.pop("grad_var_l1", None)
                logs.pop("data_loss", None)
            if report and report["changed"]:
                for cb in user_callbacks:
                    if hasattr(cb, "on_prune"):
                        cb.on_prune(epoch, report)
            callback_list.on_epoch_end(epoch, logs)
            if verbose:
                print(_progress_line(epoch, epochs, logs, len(self.gated_layers)), flush=True)
            if self.stop_training:
                break
        callback_list.on_train_end()
        if measure:  # evaluate / predict report the loss and compiled metrics only
            self._variance_metrics = False
            self.test_function = None
        return history

    # ------------------------------------------------------------- helpers
    def _set_dataset_size(self, n):
        if n is None:
            return
        for layer in self.gated_layers:
            if layer.dataset_size != n:
                layer.dataset_size = int(n)
                self.train_function = None

    def _check_x(self, x):
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"`x` must have shape (n, {self.input_dim}); received shape {x.shape}."
            )
        return x

    def _make_pipeline(self, x, y, mode, shuffle, seed):
        if isinstance(x, tf.data.Dataset):
            if y is not None:
                raise ValueError("Pass labels inside the dataset, not as `y`, when `x` is a tf.data.Dataset.")
            batched = is_batched(x, example_rank=1)
            card = int(x.cardinality())
            if batched:
                if mode == "dynhp":
                    raise ValueError(
                        'mode="dynhp" needs an *unbatched* tf.data.Dataset: DynHP re-batches the '
                        "data every epoch at a new batch size. Call `dataset.unbatch()` or pass "
                        "the dataset before `.batch()`."
                    )
                return {
                    "n": None,
                    "steps": lambda b: card if card > 0 else None,
                    "dataset": lambda b: x,
                }
            n = card if card > 0 else None
            return {
                "n": n,
                "steps": lambda b: math.ceil(n / b) if n else None,
                "dataset": _cached(lambda b: make_dataset(x, None, b, shuffle=shuffle, seed=seed)),
            }
        if x is None or y is None:
            raise ValueError("`fit` needs `x` and `y` arrays, or a tf.data.Dataset as `x`.")
        x = self._check_x(x).astype("float32", copy=False)
        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(f"`x` and `y` have different lengths: {len(x)} and {len(y)}.")
        n = len(x)
        return {
            "n": n,
            "steps": lambda b: math.ceil(n / b),
            "dataset": _cached(lambda b: make_dataset(x, y, b, shuffle=shuffle, seed=seed)),
        }

    def _make_validation(self, validation_data, batch_size):
        if validation_data is None or isinstance(validation_data, tf.data.Dataset):
            return validation_data
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("`validation_data` must be a tuple (x_val, y_val) or a tf.data.Dataset.")
        xv = self._check_x(validation_data[0]).astype("float32", copy=False)
        return make_dataset(xv, np.asarray(validation_data[1]), batch_size or 256, shuffle=False)


def _progress_line(epoch, epochs, logs, n_layers):
    """One readable line per epoch: batch size, units per layer, memory vs budget."""
    units = [int(logs[f"units_{i}"]) for i in range(n_layers)]
    pruned = sum(int(logs[f"pruned_{i}"]) for i in range(n_layers))
    line = (f"[dynhp] epoch {epoch + 1}/{epochs}: batch {int(logs['batch_size'])}, "
            f"units {units} ({pruned} pruned), params {int(logs['params']):,}, "
            f"memory {memory.kib(logs['mo_bytes']):.1f} KiB")
    if "budget_bytes" in logs:
        line += (f" of {memory.kib(logs['budget_bytes']):.1f} KiB budget, "
                 f"next batch {int(logs['next_batch_size'])}")
    return line


def _cached(factory):
    cache = {}

    def get(batch):
        if batch not in cache:
            cache.clear()
            cache[batch] = factory(batch)
        return cache[batch]

    return get


def build_mlp(
    hidden_units=(300, 100),
    input_dim=784,
    num_classes=10,
    activation="relu",
    l0_lambda=0.01,
    droprate_init=0.5,
    temperature=2.0 / 3.0,
    weight_decay=0.0,
    per_example_gates=True,
    learning_rate=1e-3,
    optimizer=None,
    compile=True,
    seed=None,
    name="dynhp_mlp",
):
    """Builds (and compiles) a LeNet-300-100 style MLP of :class:`L0Dense` layers.

    Gates sit on the `input_dim` inputs and on every hidden layer's units. The
    output layer returns class probabilities (softmax).

    Args:
        hidden_units: Widths of the hidden layers.
        input_dim: Input width (784 for 28x28 images).
        num_classes: Number of classes.
        activation: Hidden activation.
        l0_lambda: L0 strength, a float or one value per gated layer.
        droprate_init: Initial drop rate of the gates.
        temperature: Concrete temperature.
        weight_decay: L2 strength (gated, Louizos et al.).
        per_example_gates: Sample gates per example (paper) or per batch.
        learning_rate: Adam learning rate when `optimizer` is None.
        optimizer: Optimizer to compile with (default Adam).
        compile: Compile with sparse categorical cross-entropy and accuracy.
        seed: Seed of initialisers and gate noise.
        name: Model name.

    Returns:
        A :class:`DynHPModel`.

    Example:
        >>> model = build_mlp([300, 100])
        >>> model.architecture(), model.count_params_stored()
        ([784, 300, 100, 10], 266610)
    """
    hidden_units = list(hidden_units)
    n_layers = len(hidden_units) + 1
    lambdas = list(l0_lambda) if isinstance(l0_lambda, (list, tuple)) else [l0_lambda] * n_layers
    if len(lambdas) != n_layers:
        raise ValueError(
            f"`l0_lambda` needs one value per gated layer ({n_layers}); received {len(lambdas)}."
        )
    for i, units in enumerate(hidden_units):
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"`hidden_units[{i}]` must be a positive integer; received {units!r}.")
    widths = hidden_units + [num_classes]
    layers = []
    for i, units in enumerate(widths):
        last = i == len(widths) - 1
        layers.append(
            L0Dense(
                units,
                activation="softmax" if last else activation,
                l0_lambda=lambdas[i],
                droprate_init=droprate_init,
                temperature=temperature,
                weight_decay=weight_decay,
                per_example_gates=per_example_gates,
                kernel_initializer=keras.initializers.GlorotUniform(seed=None if seed is None else seed + i),
                seed=None if seed is None else seed + 100 + i,
                name=f"l0_dense_{i}",
            )
        )
    model = DynHPModel(layers, input_dim=input_dim, name=name)
    if compile:
        model.compile(
            optimizer=optimizer or keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    return model
