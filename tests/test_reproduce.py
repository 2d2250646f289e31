"""End-to-end test of the paper reproduction on a tiny profile (issue #7)."""

import csv
import json
import os

import numpy as np
import pytest

from keras_dynhp import memory
from keras_dynhp.experiments import reproduce

TINY = reproduce.Profile("tiny-test", ("fashion_mnist",), 2, (128, 256), (128,),
                         {"fashion_mnist": (0.98,)}, train_subset=1500, test_subset=500)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, fashion_subset):
    out = str(tmp_path_factory.mktemp("reproduce"))
    results = reproduce.run(out, TINY, lam=[0.05, 0.05, 0.5], verbose=0)
    return out, results


def test_outputs_exist_and_are_consistent(tiny_run):
    out, results = tiny_run
    for name in ("results.json", "results.csv", "table.md", "settings.json",
                 "fashion_mnist_memory.png", "fashion_mnist_error.png",
                 "fashion_mnist_batch_size.png", "fashion_mnist_memory_per_epoch.png",
                 "fashion_mnist/hp_bs128/units.png", "fashion_mnist/dynhp_a0.980/units.png"):
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 0, name
    methods = [r["method"] for r in results]
    assert methods[:4] == ["sp", "sp", "hp", "dynhp"]
    assert "dense" in methods
    with open(os.path.join(out, "results.json")) as f:
        assert len(json.load(f)) == len(results)
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["config"] for r in rows] == [r["config"] for r in results]
    table = open(os.path.join(out, "table.md")).read()
    for r in results:
        # Memory columns equal the accounting module's figures.
        assert f"{memory.paper_training_mbytes(r['training_memory_bytes']):.4f}" in table
        assert f"{memory.paper_mbytes(r['model_bytes']):.3f}" in table
        assert r["label"] in table
        assert r["tflite_bytes"] > 0


def test_memory_equals_accounting_per_epoch(tiny_run):
    _, results = tiny_run
    for r in results:
        if r["method"] not in ("sp", "hp", "dynhp"):
            continue
        h = r["history"]
        params_before = [reproduce.LENET_PARAMS] + [int(p) for p in h["params"][:-1]]
        expected = [memory.mo_bytes(p, b, 784) for p, b in zip(params_before, h["batch_size"])]
        np.testing.assert_allclose(h["mo_bytes"], expected)
        assert r["training_memory_bytes"] == pytest.approx(sum(expected))
        assert h["memory_total_bytes"][-1] == pytest.approx(sum(expected))
        assert r["model_bytes"] == memory.network_bytes(r["params"])
        if r["method"] == "sp":
            assert r["training_memory_bytes"] == 2 * memory.mo_bytes(266_610, r["value"], 784)
    dyn = next(r for r in results if r["method"] == "dynhp")
    ref = reproduce.reference(results, "fashion_mnist")
    assert dyn["budget_bytes"] == memory.mo_bytes(266_610, ref["value"], 784)  # best-SP budget
    assert max(dyn["history"]["mo_bytes"]) <= dyn["budget_bytes"]


def test_peers(tiny_run):
    _, results = tiny_run
    dense = next(r for r in results if r["method"] == "dense")
    assert dense["params"] == 266_610
    tfmot = [r for r in results if r["method"] == "tfmot"]
    if not tfmot:
        pytest.skip("tensorflow-model-optimization / tf_keras not installed")
    t = tfmot[0]
    assert t["params"] == 266_610  # dense matrices are stored
    assert t["nonzero_params"] < t["params"]
    assert t["training_memory_bytes"] > 2 * memory.mo_bytes(266_610, t["value"], 784)  # + masks


def test_finished_runs_are_not_rerun(tiny_run, monkeypatch):
    out, results = tiny_run

    def fail(*args, **kwargs):
        raise AssertionError("a finished configuration was re-run")

    monkeypatch.setattr("keras_dynhp.models.DynHPModel.fit", fail)
    again = reproduce.run(out, TINY, lam=[0.05, 0.05, 0.5], verbose=0)
    assert [r["error"] for r in again] == [r["error"] for r in results]


def test_interrupted_run_resumes_from_last_epoch(tmp_path, fashion_subset, monkeypatch):
    (x, y), (xt, yt) = fashion_subset
    data = ((x[:1000], y[:1000]), (xt[:300], yt[:300]))
    original = reproduce._epoch_checkpoint

    def interrupting(directory, state, start):
        callback = original(directory, state, start)
        save = callback.on_epoch_end

        def on_epoch_end(epoch, logs=None):
            save(epoch, logs)
            if epoch == 1:
                raise KeyboardInterrupt

        callback.on_epoch_end = on_epoch_end
        return callback

    monkeypatch.setattr(reproduce, "_epoch_checkpoint", interrupting)
    directory = str(tmp_path / "dyn")
    with pytest.raises(KeyboardInterrupt):
        reproduce.run_config("dynhp", 0.9, data, 4, directory, budget_bytes="2MiB", verbose=0)
    with open(os.path.join(directory, "state.json")) as f:
        state = json.load(f)
    assert state["epochs_done"] == 2
    assert not os.path.exists(os.path.join(directory, "result.json"))
    monkeypatch.setattr(reproduce, "_epoch_checkpoint", original)
    result = reproduce.run_config("dynhp", 0.9, data, 4, directory, budget_bytes="2MiB", verbose=0)
    h = result["history"]
    assert result["epochs"] == 4 and len(h["loss"]) == 4
    # The batch size carries on from the interrupted run's last decision.
    assert h["batch_size"][2] == h["next_batch_size"][1]
    assert h["batch_size"] == sorted(h["batch_size"])


def test_profile_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown profile"):
        reproduce.run(str(tmp_path), "huge")
    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "huge"])
