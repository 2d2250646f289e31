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
