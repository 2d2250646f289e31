"""PruningCallback events and the PruningLogger report."""

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
