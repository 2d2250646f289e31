"""Callbacks for pruning events and per-epoch pruning reports."""

import os

import keras

from keras_dynhp._io import write_csv, write_json


class PruningCallback(keras.callbacks.Callback):
    """Base class: override :meth:`on_prune`, called by `DynHPModel.fit` after a surgery.

    Example:
        >>> class Print(PruningCallback):
        ...     def on_prune(self, epoch, report):
        ...         print(epoch, report["units_after"])
    """

    def on_prune(self, epoch, report):
        """Called after the model was hard-pruned at the end of `epoch`.

        Args:
            epoch: 0-based epoch index.
            report: Dict with `units_before`, `units_after`, `pruned`, `seconds`.
        """


_REPORT_PREFIXES = ("units_", "pruned_", "expected_active_")
_REPORT_KEYS = (
    "loss", "accuracy", "val_loss", "val_accuracy", "l0_penalty", "params", "network_bytes",
    "batch_size", "batch_bytes", "mo_bytes", "memory_total_bytes", "surgery_ms", "grad_var_l1",
    "data_loss", "next_batch_size", "budget_bytes", "budget_headroom_bytes",
)


class PruningLogger(PruningCallback):
    """Writes the per-epoch pruning report to a CSV or JSON file.

    The file is rewritten after every epoch, so an interrupted run keeps what it
    had logged.

    Args:
        path: Output file; ".json" writes a JSON list, anything else CSV.

    Example:
        >>> logger = PruningLogger("run/pruning.csv")   # doctest: +SKIP
        >>> model.fit(x, y, mode="hp", callbacks=[logger])   # doctest: +SKIP
    """

    def __init__(self, path):
        super().__init__()
        self.path = os.fspath(path)
        self.rows = []

    def on_train_begin(self, logs=None):
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch}
        for key, value in logs.items():
            if key in _REPORT_KEYS or key.startswith(_REPORT_PREFIXES):
                row[key] = float(value) if not isinstance(value, int) else value
        self.rows.append(row)
        self._write()

    def _write(self):
        if self.path.endswith(".json"):
            write_json(self.path, self.rows)
        else:
            write_csv(self.path, self.rows)


class BackupAndRestore(keras.callbacks.Callback):
    """Resumes an interrupted `DynHPModel.fit` where it stopped, across hard pruning.

    Keras's own `keras.callbacks.BackupAndRestore` loads weights into the model
    as it was built, which hard pruning has resized; this one backs up the whole
    model after every epoch (architecture, weights, optimizer state, gate-noise
    state, and `training_state`: the epochs done, DynHP's next batch size, the
    running memory total, the learning-rate decay's base and the model budget's
    schedule), atomically, to `backup_dir/model.keras`. When `fit` starts with a
    backup there, the model is put back as it was saved, in place, and the fit
    goes on from the next epoch, exactly as an uninterrupted one would (the same
    `fit` arguments, the same `seed`). A fit that ends (its last epoch, or a
    callback's stop) deletes the backup unless `delete_checkpoint=False`.

    Args:
        backup_dir: Directory of the backup (created when needed).
        save_freq: Only "epoch": pruning and the batch rule act at epoch ends,
            so a backup within an epoch could not be resumed exactly.
        delete_checkpoint: Delete the backup when the fit ends.

    Example:
        >>> backup = BackupAndRestore("runs/backup")                       # doctest: +SKIP
        >>> model.fit(x, y, mode="dynhp", epochs=100, memory_budget=C,
        ...           callbacks=[backup])   # interrupted? run the same line again  # doctest: +SKIP
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__()
        if not backup_dir:
            raise ValueError("`backup_dir` must be a directory path.")
        if save_freq != "epoch":
            raise ValueError(
                f'`save_freq` must be "epoch" (pruning acts at epoch ends); received {save_freq!r}.')
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.delete_checkpoint = bool(delete_checkpoint)

    @property
    def path(self):
        """The backup file."""
        return os.path.join(self.backup_dir, "model.keras")

    def restore(self, model):
        """Puts the backed-up model into `model`, in place; returns the epochs it had done (0: none).

        Called by `DynHPModel.fit` before training starts.
        """
        if not os.path.exists(self.path):
            return 0
        from keras_dynhp import surgery
        from keras_dynhp.models import load_model

        saved = load_model(self.path)
        if type(saved) is not type(model) or len(saved.gated_layers) != len(model.gated_layers):
            raise ValueError(f"The backup {self.path} holds another model ({saved.name}); delete it or choose "
                             "another `backup_dir`.")
        weights = saved.get_weights()
        surgery.restore_architecture(model, weights.architecture)  # the optimizer state too
        model.set_weights(weights)
        model.training_state = dict(saved.training_state)
        return int(model.training_state.get("epoch", 0))

    def on_epoch_end(self, epoch, logs=None):
        from keras_dynhp._io import save_keras

        save_keras(self.model, self.path)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and os.path.exists(self.path):
            os.remove(self.path)
