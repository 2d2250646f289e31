"""The epoch loop of SP, HP and DynHP (what `DynHPModel.fit` runs).

One epoch, in order (the Architecture page draws it)::

    gates sampled per example while training  ->  gate statistics (eq. 6)
    -> validation (before the epoch's surgery) ->  memory of the epoch (paper accounting)
    -> hard pruning of the groups (eq. 7, surgery with the optimizer state)
    -> model budget, if any (eq. 12: down to the epoch's target size; keras_dynhp.budget)
    -> batch policy (eq. 8-10: DynHP grows the batch under the budget)
    -> the next epoch's pipeline, re-batched if the batch size changed

Each epoch is one call of Keras's own `fit`, so progress bars, metrics,
validation and callbacks behave as usual; user callbacks see one training run
whose epoch-end logs carry the pruning and memory figures. Keras's
`EarlyStopping(restore_best_weights=True)` works across pruning: the model's
`get_weights()` remembers its network (:class:`~keras_dynhp.models.ModelWeights`),
and with a model budget only the epochs whose network fits it are candidates.
"""

import functools
import math
import time
import warnings

import keras
from keras import ops

from keras_dynhp import budget as budgets
from keras_dynhp import memory, surgery
from keras_dynhp.batch_size import DEFAULT_ALPHA_BS, DynamicBatchSize, FixedBatchSize
from keras_dynhp.pruning import HardPruning

MODES = ("sp", "hp", "dynhp")
_TRAINING_ONLY = ("val_grad_var_l1", "val_data_loss")


def policy_footprint(model, batch_policy, held=0):
    """`(fixed, per_example)` bytes for a batch policy in the full accounting, None in the paper's.

    `held`: bytes of snapshots the fit keeps (best weights), counted in the fixed part.
    """
    if getattr(batch_policy, "accounting", "paper") == "paper":
        return None  # eq. 9-10 as the paper writes them
    fixed, per_example = memory.footprint(model, batch_policy.accounting, batch_policy.measures_variance)
    return fixed + int(held), per_example


def resolve_policies(mode, batch_size=None, gamma=0.5, min_units=1, prune_start_epoch=0,
                     alpha_bs=DEFAULT_ALPHA_BS, memory_budget=None, initial_batch_size=16, variance_every=1,
                     pruning=None, batch_policy=None, accounting="paper"):
    """The pruning and batch policies of a mode, from `fit`'s short-form arguments.

    Args:
        mode: "sp", "hp" or "dynhp".
        batch_size: `fit`'s short form (sp, hp).
        gamma: `fit`'s short form (hp, dynhp).
        min_units: `fit`'s short form (hp, dynhp).
        prune_start_epoch: `fit`'s short form (hp, dynhp).
        alpha_bs: `fit`'s short form (dynhp).
        memory_budget: `fit`'s short form (dynhp).
        initial_batch_size: `fit`'s short form (dynhp).
        variance_every: `fit`'s short form (dynhp).
        accounting: `fit`'s short form (dynhp): what `memory_budget` counts.
        pruning: A :class:`~keras_dynhp.pruning.HardPruning` to use instead of
            `gamma` / `min_units` / `prune_start_epoch` (hp, dynhp).
        batch_policy: A :class:`~keras_dynhp.batch_size.DynamicBatchSize` (dynhp)
            or :class:`~keras_dynhp.batch_size.FixedBatchSize` to use instead of
            the short forms.

    Returns:
        `(pruning or None, batch policy)`.

    Raises:
        ValueError: For an unknown mode or bad settings.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown `mode`={mode!r}; expected one of {MODES}.")
    policy = pruning if pruning is not None else HardPruning(gamma, min_units, prune_start_epoch)
    if not isinstance(policy, HardPruning):
        raise ValueError(f"`pruning` must be a HardPruning; received {type(policy).__name__}.")
    if batch_policy is None:
        if mode == "dynhp":
            if memory_budget is None:
                raise ValueError('mode="dynhp" needs a `memory_budget` (bytes or e.g. "1433KiB").')
            batch_policy = DynamicBatchSize(alpha_bs, memory_budget, initial_batch_size, variance_every,
                                            accounting=accounting)
        else:
            batch_policy = FixedBatchSize(32 if batch_size is None else batch_size)
    elif not isinstance(batch_policy, (FixedBatchSize, DynamicBatchSize)):
        raise ValueError(
            f"`batch_policy` must be a FixedBatchSize or DynamicBatchSize; received "
            f"{type(batch_policy).__name__}.")
    if mode == "dynhp" and not isinstance(batch_policy, DynamicBatchSize):
        raise ValueError('mode="dynhp" needs a DynamicBatchSize batch policy.')
    if accounting not in memory.ACCOUNTINGS:
        raise ValueError(f"`accounting` must be one of {memory.ACCOUNTINGS}; received {accounting!r}.")
    if accounting != batch_policy.accounting:  # never silently ignored
        raise ValueError(
            f'accounting="{accounting}" is what a DynHP memory budget counts: it needs mode="dynhp"'
            if mode != "dynhp" else
            f'accounting="{accounting}" conflicts with the batch_policy\'s accounting '
            f'"{batch_policy.accounting}": set it on the DynamicBatchSize.')
    return (policy if mode in ("hp", "dynhp") else None), batch_policy


#: What `fit(learning_rate_decay=...)` takes.
LEARNING_RATE_DECAYS = ("cosine", None)


class LearningRateDecay:
    """The optimizer's learning rate over one fit's epochs: cosine from `base` to 0 (per epoch).

    Epoch e of E trains at `base * (1 + cos(pi * e / E)) / 2`: the first epoch
    at `base`, the last near 0. `fit` sets it at every epoch start (the
    optimizer that a surgery builds carries the rate over) and puts `base` back
    when it ends. Measured on LeNet-300-100 with a model budget (Fashion-MNIST,
    30 epochs, validation split): the small network reaches a lower validation
    error than at a constant rate (docs/reproduction.md, "Choosing the defaults").

    Args:
        base: The learning rate of the first epoch (the optimizer's own).
        epochs: E, the fit's `epochs`.

    Example:
        >>> decay = LearningRateDecay(1e-3, 4)
        >>> [round(decay.rate(e), 6) for e in range(4)]
        [0.001, 0.000854, 0.0005, 0.000146]
    """

    def __init__(self, base, epochs):
        self.base, self.epochs = float(base), max(int(epochs), 1)

    def rate(self, epoch):
        """The learning rate of epoch `epoch` (0-based)."""
        return self.base * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))

    @staticmethod
    def decayable(optimizer):
        """Whether `optimizer`'s learning rate is a number to set (not a schedule of its own)."""
        return isinstance(getattr(optimizer, "_learning_rate", None), keras.Variable)


def sets_learning_rate(callbacks):
    """Whether `callbacks` hold Keras's own learning-rate callbacks (then `fit` leaves the rate to them)."""
    kinds = (keras.callbacks.LearningRateScheduler, keras.callbacks.ReduceLROnPlateau)
    return any(isinstance(cb, kinds) for cb in callbacks or [])


class PruningWarning(UserWarning):
    """Hard pruning removed a large part of a layer in one epoch, or brought it down to `min_units`."""


class DivergenceError(ValueError):
    """Training produced a NaN or infinite loss; the model was restored to its last finished epoch."""


#: Fraction of a layer's units whose removal in one epoch triggers a PruningWarning.
WARN_PRUNED_FRACTION = 0.5


def check_callbacks(callbacks, pruning):
    """Rejects callbacks that cannot work here: Keras's BackupAndRestore in every mode (the epoch loop
    would not skip the epochs it restored; with pruning the weights change shape too)."""
    for cb in callbacks or []:
        if isinstance(cb, keras.callbacks.BackupAndRestore):
            raise ValueError(
                "keras.callbacks.BackupAndRestore restores weights into the model as first built, which "
                "hard pruning resizes, and cannot skip the epochs done: use "
                "keras_dynhp.callbacks.BackupAndRestore(backup_dir), which backs up and restores the whole "
                "model (same arguments).")


def best_weights_callbacks(callbacks):
    """The `EarlyStopping(restore_best_weights=True)` callbacks among `callbacks`."""
    return [cb for cb in callbacks or [] if isinstance(cb, keras.callbacks.EarlyStopping)
            and cb.restore_best_weights]


def held_bytes(callbacks):
    """Bytes the best-weights snapshots of `callbacks` hold now (the full accounting's `snapshot`)."""
    return sum(int(getattr(cb.best_weights, "nbytes", 0) or 0) for cb in best_weights_callbacks(callbacks)
               if cb.best_weights is not None)


def _snapshot(model):
    """Copies of the weights and the optimizer state (to restore a diverged epoch)."""
    optimizer = getattr(model, "optimizer", None)
    opt_vars = list(optimizer.variables) if optimizer is not None and optimizer.built else []
    return ([(v, ops.convert_to_numpy(v)) for v in model.variables]
            + [(v, ops.convert_to_numpy(v)) for v in opt_vars])


def _restore(snapshot):
    for variable, value in snapshot:
        variable.assign(value)


class _Forwarder(keras.callbacks.Callback):
    """Forwards the validation events of an inner one-epoch `fit` to the run's callbacks.

    Train begin/end and epoch end are driven by the loop itself, so user
    callbacks see one training run and the epoch-end logs include the pruning
    and memory figures. Batch events are forwarded by :class:`_BatchForwarder`
    only when a callback listens to them: a batch hook makes Keras turn every
    step's logs into Python numbers, which stops the JAX backend (and costs the
    TensorFlow one) from running steps ahead of the callbacks.
    """

    def __init__(self, callback_list):
        super().__init__()
        self.callback_list = callback_list
        self.diverged = None  # (step, loss) of the first non-finite loss seen by a batch hook

    def on_epoch_begin(self, epoch, logs=None):
        self.callback_list.on_epoch_begin(epoch, logs)

    def on_test_begin(self, logs=None):
        self.callback_list.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.callback_list.on_test_end(logs)


class _BatchForwarder(_Forwarder):
    """:class:`_Forwarder` plus the batch events, and a step-level divergence check."""

    def on_train_batch_begin(self, batch, logs=None):
        self.callback_list.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = (batch, float(loss))
            self.model.stop_training = True
            return
        self.callback_list.on_train_batch_end(batch, logs)

    def on_test_batch_begin(self, batch, logs=None):
        self.callback_list.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self.callback_list.on_test_batch_end(batch, logs)


#: Keys the epoch loop and the DynHP step add to the logs (pruning, memory, budgets): in the
#: History, CSV and TensorBoard, but not on the progress bar, which shows the loss and the
#: compiled metrics (the one-line summary of `progress_line` follows each epoch).
_PRUNING_KEYS = frozenset((
    "l0_penalty", "batch_size", "batch_bytes", "mo_bytes", "memory_total_bytes", "params",
    "network_bytes", "expected_bytes", "delivered_bytes", "surgery_ms", "grad_var_l1", "data_loss",
    "next_batch_size", "model_budget_bytes", "full_bytes", "activation_bytes"))
_PRUNING_PREFIXES = ("units_", "pruned_", "expected_active_", "budget_")


def progress_bar_logs(logs):
    """`logs` without the pruning and memory figures (what the progress bar shows)."""
    return {k: v for k, v in (logs or {}).items()
            if k not in _PRUNING_KEYS and not k.startswith(_PRUNING_PREFIXES)}


class _Progbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, showing the loss and compiled metrics only."""

    def _update_progbar(self, batch, logs=None):
        super()._update_progbar(batch, progress_bar_logs(logs))

    def _finalize_progbar(self, logs):
        super()._finalize_progbar(progress_bar_logs(logs))


def _listens_to_batches(callbacks):
    hooks = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end",
             "on_test_batch_begin", "on_test_batch_end")
    return any(getattr(type(cb), hook) is not getattr(keras.callbacks.Callback, hook)
               for cb in callbacks for hook in hooks)


def run_epochs(model, keras_fit, pipeline, validation, epochs, initial_epoch, callbacks, verbose,
               pruning, batch_policy, memory_total_bytes=0, budget=None, step_by_step=False,
               learning_rate_decay=None):
    """Runs the epochs of one `fit` (see the module docstring); returns the History.

    Args:
        model: The DynHPModel.
        keras_fit: Keras's own `fit` of the model (one epoch per call).
        pipeline: The :class:`~keras_dynhp.data.EpochPipeline`.
        validation: Keras `fit`'s validation arguments
            (:func:`~keras_dynhp.data.validation_inputs`; empty for none).
        epochs: As in `fit`.
        initial_epoch: As in `fit`.
        callbacks: User callbacks.
        verbose: As in `fit` (0, 1 or 2).
        pruning: :class:`~keras_dynhp.pruning.HardPruning` or None (sp).
        batch_policy: The batch policy (its `batch_size` is the first epoch's).
        memory_total_bytes: Running sum of MO of the epochs before `initial_epoch`.
        budget: A resolved :class:`~keras_dynhp.budget.ModelBudget` or None.
        step_by_step: Finish every step before the next starts (batch events
            forwarded, so Keras reads each step's logs): data parallelism over
            CPU devices needs it, as XLA's CPU collectives can deadlock when
            several steps are in flight.
        learning_rate_decay: A :class:`LearningRateDecay` or None (the
            optimizer's rate as it is).

    After every epoch (before the callbacks, so a checkpoint saves it)
    `model.training_state` records the epochs done, the running memory total
    and the next batch size.
    """
    history = keras.callbacks.History()
    user_callbacks = list(callbacks or [])
    batch = batch_policy.batch_size
    callback_list = keras.callbacks.CallbackList(
        user_callbacks + [history] + ([_Progbar()] if verbose else []), verbose=verbose,
        epochs=epochs, steps=pipeline.steps(batch), model=model,
    )
    total_bytes = int(memory_total_bytes)
    listeners = user_callbacks + [cb for cb in callback_list.callbacks if cb not in user_callbacks]
    forwarder_class = _BatchForwarder if step_by_step or _listens_to_batches(listeners) else _Forwarder
    model.stop_training = False
    watchers = best_weights_callbacks(user_callbacks) + [
        cb for cb in user_callbacks if isinstance(cb, keras.callbacks.EarlyStopping) and not cb.restore_best_weights]
    warm_up = {id(cb): cb.start_from_epoch for cb in watchers}
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callback_list.set_params({"verbose": verbose, "epochs": epochs, "steps": pipeline.steps(batch)})
        if learning_rate_decay is not None:
            model.optimizer.learning_rate = learning_rate_decay.rate(epoch)
        snapshot = _snapshot(model)  # the model as the last finished epoch left it
        if budget is not None:
            model.set_deterministic_training(budget.recovering(epoch))
            if budget.uses_multiplier:  # eq. 13's target in expected bytes, and its step
                model.budget_target_bytes.assign(budgets.expected_target(model, budget.target_bytes(epoch)))
                model.budget_step.assign(budget.multiplier_lr / max(pipeline.steps(batch) or 1000, 1))
        for layer in model.gated_layers:
            layer.reset_gate_stats()
        params_in_epoch = model.count_params_stored()
        held = held_bytes(user_callbacks)  # the best epoch's copies, if a callback keeps them
        full = memory.full_accounting(model, batch, batch_policy.measures_variance, held)  # at the epoch's start
        forwarder = forwarder_class(callback_list)
        inner = keras_fit(
            **pipeline.fit_inputs(batch, epoch), epochs=epoch + 1, initial_epoch=epoch, verbose=0,
            callbacks=[forwarder], **validation,
            shuffle=False,  # the pipeline shuffles (seeded) itself
        )
        epoch_loss = inner.history.get("loss", [0.0])[-1] if inner.history.get("loss") else 0.0
        if forwarder.diverged is not None or not math.isfinite(float(epoch_loss)):
            _restore(snapshot)
            where = (f"at step {forwarder.diverged[0] + 1} of" if forwarder.diverged is not None
                     else "during")
            raise DivergenceError(
                f"The loss became NaN or infinite {where} epoch {epoch + 1}: training stopped and the "
                f"model was restored to the end of epoch {epoch} (before this one). Lower the learning "
                "rate or the L0 lambda, or check the data for extreme values.")
        logs = {k: v[-1] for k, v in inner.history.items() if v and k not in _TRAINING_ONLY}
        if not logs:  # the epoch was stopped before it logged anything
            break
        mo = memory.mo_bytes(params_in_epoch, batch, model.example_size)
        total_bytes += mo
        logs.update({
            "l0_penalty": model.l0_penalty(),
            "batch_size": batch,
            "batch_bytes": memory.batch_bytes(batch, model.example_size),
            "mo_bytes": mo,
            "memory_total_bytes": total_bytes,
            "full_bytes": full["total"],
            "activation_bytes": full["activations"],
        })
        report = None
        if pruning is not None and pruning.prunes_after(epoch):
            limit = None
            if budget is not None and not budget.enforced_after(epoch):  # no overshoot below T_e
                limit = functools.partial(budgets.limit_pruning, model.gated_layers,
                                          min_params=budget.target_bytes(epoch) / memory.BYTES_PER_NUMBER,
                                          links=model.links())
            report = surgery.prune_model(model, policy=pruning, limit=limit)
            _warn_about(report, epoch, pruning.min_units)
        if budget is not None:  # step 2 of keras_dynhp.budget: fit the epoch's target T_e
            logs["budget_multiplier"] = float(ops.convert_to_numpy(model.budget_multiplier))
            logs["budget_target_bytes"] = budget.target_bytes(epoch)
            logs["model_budget_bytes"] = budget.max_bytes
            units_before = report["units_before"] if report else model.units()
            seconds = report["seconds"] if report else 0.0
            start = time.perf_counter()
            removed = budgets.enforce(model, budget.target_bytes(epoch),
                                      pruning.min_units if pruning else 1, hard=pruning is not None)
            if pruning is not None and removed:
                after = model.units()
                report = {"units_before": units_before, "units_after": after, "changed": True,
                          "pruned": [b - a for b, a in zip(units_before, after)],
                          "seconds": seconds + time.perf_counter() - start}
            logs["budget_removed_units"] = removed
        for i, (units, active) in enumerate(zip(model.units(), model.expected_active_units())):
            logs[f"units_{i}"] = units
            logs[f"expected_active_{i}"] = active
            logs[f"pruned_{i}"] = report["pruned"][i] if report else 0
        logs["params"] = model.count_params_stored()
        logs["network_bytes"] = model.network_bytes()
        logs["expected_bytes"] = model.expected_bytes()
        logs["delivered_bytes"] = model.delivered_bytes()
        logs["surgery_ms"] = 1000.0 * report["seconds"] if report else 0.0
        if batch_policy.measures_variance:
            s_l1 = float(logs.get("grad_var_l1", 0.0))
            f = float(logs.get("data_loss", 0.0))
            new_batch = batch_policy.update(s_l1, f, model.count_params_stored(), model.example_size,
                                            footprint=policy_footprint(model, batch_policy, held))
            logs["next_batch_size"] = new_batch
            logs["budget_bytes"] = batch_policy.budget_bytes
            logs["budget_headroom_bytes"] = batch_policy.budget_bytes - (
                full["total"] if batch_policy.accounting == "full" else mo)
            batch = new_batch
        else:
            logs.pop("grad_var_l1", None)
            logs.pop("data_loss", None)
        state = {"epoch": epoch + 1, "memory_total_bytes": int(total_bytes), "batch_size": int(batch)}
        if learning_rate_decay is not None:
            state["base_learning_rate"] = learning_rate_decay.base
        if budget is not None:
            state.update(budget_start_bytes=int(budget.start_bytes), budget_deadline=int(budget.deadline))
        model.training_state = state
        if report and report["changed"]:
            for cb in user_callbacks:
                if hasattr(cb, "on_prune"):
                    cb.on_prune(epoch, report)
        if budget is not None and model.delivered_bytes() > budget.max_bytes:
            for cb in watchers:  # a network over the model budget is no candidate for the best epoch
                cb.start_from_epoch = max(cb.start_from_epoch, epoch + 1)
        callback_list.on_epoch_end(epoch, logs)
        memory.release_free_memory()  # the epoch's freed compilation and data buffers
        if verbose:
            mode = "sp" if pruning is None else ("dynhp" if batch_policy.measures_variance else "hp")
            print(progress_line(epoch, epochs, logs, len(model.gated_layers), mode), flush=True)
        if model.stop_training:
            break
    callback_list.on_train_end()
    history.restored_epoch = None
    for cb in watchers:
        cb.start_from_epoch = warm_up[id(cb)]
        if cb.restore_best_weights and cb.best_weights is not None:
            history.restored_epoch = cb.best_epoch
    if budget is not None and model.delivered_bytes() > budget.max_bytes:
        warnings.warn(
            f"The network ({model.delivered_bytes():,} bytes) does not fit the model budget "
            f"({budget.max_bytes:,} bytes) yet: its deadline is epoch {budget.deadline + 1}, after this "
            "fit's last epoch. Train on to the deadline (fit(..., initial_epoch=...)) or set an earlier "
            "deadline.", PruningWarning, stacklevel=3)
    return history


def _warn_about(report, epoch, min_units):
    for i, (before, after) in enumerate(zip(report["units_before"], report["units_after"])):
        if after == before:
            continue
        if after <= min_units:
            warnings.warn(
                f"Epoch {epoch + 1}: hard pruning brought gated layer {i} down to min_units "
                f"({before} -> {after} units): gamma may be too high for this lambda.",
                PruningWarning, stacklevel=4)
        elif before - after > WARN_PRUNED_FRACTION * before:
            warnings.warn(
                f"Epoch {epoch + 1}: hard pruning removed {before - after} of the {before} units of gated "
                f"layer {i} at once.", PruningWarning, stacklevel=4)


def progress_line(epoch, epochs, logs, n_layers, mode="dynhp"):
    """One readable line per epoch: batch size, units per layer, memory vs budgets."""
    units = [int(logs[f"units_{i}"]) for i in range(n_layers)]
    pruned = sum(int(logs[f"pruned_{i}"]) for i in range(n_layers))
    line = (f"[{mode}] epoch {epoch + 1}/{epochs}: batch {int(logs['batch_size'])}, "
            f"units {units} ({pruned} pruned), params {int(logs['params']):,}, "
            f"memory {memory.kib(logs['mo_bytes']):.1f} KiB")
    if "full_bytes" in logs:
        line += f" (full accounting {memory.kib(logs['full_bytes']):.1f})"
    if "budget_bytes" in logs:
        line += (f" of {memory.kib(logs['budget_bytes']):.1f} KiB budget, "
                 f"next batch {int(logs['next_batch_size'])}")
    if "model_budget_bytes" in logs:
        line += (f"; model {logs['delivered_bytes'] / 1000:.1f} KB of {logs['model_budget_bytes'] / 1000:.1f}"
                 f" KB budget (this epoch's target {logs['budget_target_bytes'] / 1000:.1f} KB")
        if logs.get("budget_multiplier"):  # eq. 13's multiplier, only when ModelBudget(multiplier_lr > 0)
            line += f", size-penalty multiplier {logs['budget_multiplier']:.3g}"
        line += ")"
    return line
