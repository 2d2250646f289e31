"""PruningCallback events and the PruningLogger report."""

import numpy as np
import pytest
from test_surgery import _data, _model

import keras_dynhp


def test_pruning_callback_and_logger(tmp_path):
    events = []

    class Hook(keras_dynhp.callbacks.PruningCallback):
        def on_prune(self, epoch, report):
            events.append((epoch, report["units_after"]))

    model = _model(l0_lambda=50.0, learning_rate=0.05, droprate_init=0.8)
    x, y = _data(256)
    csv_path, json_path = tmp_path / "p.csv", tmp_path / "p.json"
    model.fit(x, y, epochs=2, batch_size=16, mode="hp", verbose=0,
              callbacks=[Hook(), keras_dynhp.callbacks.PruningLogger(csv_path),
                         keras_dynhp.callbacks.PruningLogger(json_path)])
    assert events and events[-1][1] == model.units()
    import json
    rows = json.loads(json_path.read_text())
    assert len(rows) == 2 and rows[-1]["units_0"] == model.units()[0]
    assert csv_path.read_text().splitlines()[0].startswith("epoch,")


def test_tensorboard_logs_units_params_memory_and_batch_per_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    import glob

    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(128, 20)).astype("float32"), rng.integers(0, 4, 128)
    model = keras_dynhp.build_mlp([12, 8], input_dim=20, num_classes=4, seed=0)
    model.fit(x, y, epochs=2, mode="dynhp", memory_budget="64KiB", model_budget="2KB", verbose=0,
              callbacks=[keras.callbacks.TensorBoard(str(tmp_path))])
    tags = set()
    for path in glob.glob(str(tmp_path / "train" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    for tag in ("epoch_units_0", "epoch_params", "epoch_mo_bytes", "epoch_batch_size",
                "epoch_delivered_bytes", "epoch_budget_target_bytes"):
        assert tag in tags, (tag, sorted(tags))
