"""The one-run harness (keras_dynhp.experiments.harness) on a small subset of the real Fashion-MNIST."""

import json
import os

import keras
import numpy as np
import pytest

import keras_dynhp
from keras_dynhp import memory
from keras_dynhp.experiments import harness

HIDDEN = (30, 10)
LAMBDA = [0.05, 0.05, 0.5]


@pytest.fixture(scope="module")
def data(fashion_subset):
    (x, y), (xt, yt) = fashion_subset
    return (x[:1000], y[:1000]), (xt[:300], yt[:300])


@pytest.fixture(scope="module")
def records(tmp_path_factory, data):
    """DynHP, HP and dense records of 2 epochs, each in its own directory."""
    root = tmp_path_factory.mktemp("harness")
    runs = {
        "dynhp": ("dynhp", 0.98, {"budget_bytes": "600KiB", "l0_lambda": LAMBDA}),
        "hp": ("hp", 128, {"l0_lambda": LAMBDA}),
        "dense": ("dense", 128, {}),
    }
    out = {}
    for name, (method, value, kwargs) in runs.items():
        directory = str(root / harness.config_id(method, value))
        out[name] = (directory, harness.run_config(method, value, data, 2, directory, dataset="fashion_mnist",
                                                   hidden=HIDDEN, verbose=0, **kwargs))
    return out


def test_paper_constants_are_derived():
    assert harness.LENET_PARAMS == 266_610
    assert keras_dynhp.build_mlp(list(harness.LENET_HIDDEN)).count_params_stored() == harness.LENET_PARAMS
    dense = harness.build_dense(list(harness.LENET_HIDDEN), 784, 10, 1e-3, seed=0)
    assert dense.count_params() == harness.LENET_PARAMS


def test_every_key_is_documented():
    returns = harness.run_config.__doc__.split("Returns:")[1]
    for key in harness.RESULT_KEYS + harness.TFMOT_KEYS:
        assert f"`{key}`" in returns, key


def test_records_have_every_key(records):
    for name, (directory, r) in records.items():
        assert tuple(r) == harness.RESULT_KEYS, name
        assert r["dataset"] == "fashion_mnist" and r["epochs"] == 2
        assert r["error_pct"] == pytest.approx(100 * (1 - r["test_accuracy"]))
        assert r["model_bytes"] == memory.network_bytes(r["params"])
        h = r["history"]
        assert len(h["loss"]) == len(h["val_accuracy"]) == len(h["mo_bytes"]) == 2
        assert h["memory_total_bytes"] == np.cumsum(h["mo_bytes"]).tolist()
        assert r["training_bytes"] == sum(h["mo_bytes"])
        assert r["final_batch_size"] == h["batch_size"][-1]
        assert r["tflite_bytes"] == os.path.getsize(os.path.join(directory, "model.tflite"))
        with open(os.path.join(directory, "result.json")) as f:
            assert json.load(f) == json.loads(json.dumps(r))
        assert not [f for f in os.listdir(directory) if f.startswith("ckpt_")]


def test_dynhp_hp_and_dense_records(records):
    _, dyn = records["dynhp"]
    assert dyn["label"] == "DynHP a=0.980" and dyn["config"] == "dynhp_a0.980"
    assert dyn["budget_bytes"] == memory.parse_bytes("600KiB")
    assert max(dyn["history"]["mo_bytes"]) <= dyn["budget_bytes"]
    assert len(dyn["architecture"]) == 4 and dyn["architecture"][-1] == 10
    assert all(a <= b for a, b in zip(dyn["architecture"], [784, *HIDDEN, 10]))
    dense_params = harness.dense_params(784, HIDDEN, 10)
    # The first epoch's memory counts the unpruned network.
    assert dyn["history"]["mo_bytes"][0] == memory.mo_bytes(dense_params, 16, 784)
    _, hp = records["hp"]
    assert hp["budget_bytes"] is None and hp["history"]["batch_size"] == [128, 128]
    assert hp["params"] == hp["history"]["params"][-1] <= dense_params
    _, dense = records["dense"]
    assert dense["label"] == "Dense Keras MLP (bs 128)" and dense["budget_bytes"] is None
    assert dense["params"] == dense_params and dense["architecture"] == [784, *HIDDEN, 10]
    assert dense["training_bytes"] == 2 * memory.mo_bytes(dense_params, 128, 784)
    assert dense["history"]["params"] == [dense_params] * 2


def test_finished_configs_are_not_rerun(records, data, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a finished configuration was re-run")

    monkeypatch.setattr("keras_dynhp.models.DynHPModel.fit", fail)
    monkeypatch.setattr(keras.Model, "fit", fail)
    for directory, r in records.values():
        again = harness.run_config(r["method"], r["value"], data, 2, directory, hidden=HIDDEN, verbose=0)
        assert again == json.loads(json.dumps(r))


def _interrupting(original, at_epoch):
    def make(directory, state, start):
        callback = original(directory, state, start)
        save = callback.on_epoch_end

        def on_epoch_end(epoch, logs=None):
            save(epoch, logs)
            if epoch == at_epoch:
                raise KeyboardInterrupt

        callback.on_epoch_end = on_epoch_end
        return callback

    return make


def test_interrupted_run_resumes_from_last_epoch(tmp_path, fashion_subset, monkeypatch):
    (x, y), (xt, yt) = fashion_subset
    data = ((x[:1000], y[:1000]), (xt[:300], yt[:300]))
    original = harness._epoch_checkpoint
    monkeypatch.setattr(harness, "_epoch_checkpoint", _interrupting(original, 1))
    directory = str(tmp_path / "dyn")
    with pytest.raises(KeyboardInterrupt):
        harness.run_config("dynhp", 0.9, data, 4, directory, budget_bytes="2MiB", verbose=0)
    with open(os.path.join(directory, "state.json")) as f:
        state = json.load(f)
    assert state["epochs_done"] == 2
    assert not os.path.exists(os.path.join(directory, "result.json"))
    monkeypatch.setattr(harness, "_epoch_checkpoint", original)
    result = harness.run_config("dynhp", 0.9, data, 4, directory, budget_bytes="2MiB", verbose=0)
    h = result["history"]
    assert result["epochs"] == 4 and len(h["loss"]) == 4
    # The batch size carries on from the interrupted run's last decision.
    assert h["batch_size"][2] == h["next_batch_size"][1]
    assert h["batch_size"] == sorted(h["batch_size"])


def test_interrupted_dense_run_resumes(tmp_path, data, monkeypatch):
    original = harness._epoch_checkpoint
    monkeypatch.setattr(harness, "_epoch_checkpoint", _interrupting(original, 0))
    directory = str(tmp_path / "dense")
    with pytest.raises(KeyboardInterrupt):
        harness.run_config("dense", 256, data, 2, directory, hidden=HIDDEN, verbose=0)
    monkeypatch.setattr(harness, "_epoch_checkpoint", original)
    result = harness.run_config("dense", 256, data, 2, directory, hidden=HIDDEN, verbose=0)
    assert result["epochs"] == 2 and len(result["history"]["val_accuracy"]) == 2


def test_without_directory_only_the_given_paths_are_written(tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = harness.run_config("sp", 256, data, 1, hidden=(20,), verbose=0, model_path="m.keras",
                           compact_path="c.keras")
    assert r["tflite_bytes"] is None and r["epochs"] == 1
    assert sorted(os.listdir(tmp_path)) == ["c.keras", "m.keras"]
    with pytest.raises(harness.ExportError):
        harness.run_config("sp", 256, data, 1, hidden=(20,), verbose=0, tflite_path="m.tflite",
                           quantization="int4")


def test_old_result_files_get_the_unified_keys(tmp_path):
    old = {"method": "sp", "value": 128, "label": "SP (bs 128)", "error": 10.0,
           "training_memory_bytes": 5.0e6, "history": {"error": [20.0, 10.0]}}
    (tmp_path / "result.json").write_text(json.dumps(old))
    r = harness.finished(str(tmp_path))
    assert r["error_pct"] == 10.0 and r["training_bytes"] == 5.0e6
    assert r["test_accuracy"] == pytest.approx(0.9)
    assert r["history"]["val_accuracy"] == pytest.approx([0.8, 0.9])
    assert "error" not in r and "training_memory_bytes" not in r


def test_records_labels_and_errors():
    r = harness.new_record("tfmot", 128, test_accuracy=0.75, nonzero_params=3)
    assert tuple(r)[: len(harness.RESULT_KEYS)] == harness.RESULT_KEYS and r["error_pct"] == 25.0
    assert r["label"] == "tfmot magnitude (bs 128)" and r["config"] == "tfmot_bs128"
    assert harness.label("dynhp", 0.9855) == "DynHP a=0.9855"
    with pytest.raises(ValueError, match="Unknown result keys"):
        harness.new_record("sp", 128, error=1.0)
    with pytest.raises(ValueError, match="Unknown method"):
        harness.run_config("lottery", 1, None, 1)
    with pytest.raises(ValueError, match="sparsity"):
        harness.run_config("tfmot", 128, None, 1)


def test_a_validation_split_is_validated_on_and_the_test_set_evaluated_once(data, monkeypatch):
    (x, _), _ = data
    seen = []
    fit = keras_dynhp.DynHPModel.fit

    def spy(self, x, y=None, **kwargs):
        seen.append((len(x), len(kwargs["validation_data"][0])))
        return fit(self, x, y, **kwargs)

    monkeypatch.setattr(keras_dynhp.DynHPModel, "fit", spy)
    r = harness.run_config("sp", 128, data, 1, hidden=HIDDEN, verbose=0, validation=200, l0_lambda=LAMBDA)
    assert seen == [(len(x) - 200, 200)]  # trained on the rest, validated on the last 200 training images
    assert r["validation"] == 200
    assert r["val_error_pct"] == pytest.approx(100 * (1 - r["history"]["val_accuracy"][-1]))
    with pytest.raises(ValueError, match="validation"):
        harness.run_config("sp", 128, data, 1, hidden=HIDDEN, verbose=0, validation=len(x))


def test_choices_between_runs_use_validation_when_the_runs_held_it_out():
    from keras_dynhp.experiments import reproduce

    runs = [{"dataset": "d", "method": "sp", "error_pct": 1.0, "val_error_pct": 3.0},
            {"dataset": "d", "method": "sp", "error_pct": 2.0, "val_error_pct": 2.5}]
    assert reproduce.reference(runs, "d")["error_pct"] == 2.0  # the lower validation error
    paper = [dict(r, val_error_pct=None) for r in runs]
    assert reproduce.reference(paper, "d")["error_pct"] == 1.0  # the paper's rule: the lower test error
    assert reproduce.PROFILES["compress30"].validation == 5000
    assert reproduce.PROFILES["compress100"].budget_deadline == 0.75  # as it ran in session 6
