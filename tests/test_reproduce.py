"""End-to-end test of the paper reproduction on a tiny profile (issue #7).

The harness under it (one run, resuming an interrupted run) is tested in test_harness.py.
"""

import csv
import json
import os

import numpy as np
import pytest

from keras_dynhp import cli, memory
from keras_dynhp.experiments import harness, reproduce

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
    assert tuple(rows[0]) == reproduce.CSV_COLUMNS
    assert all(tuple(r)[:len(harness.RESULT_KEYS)] == harness.RESULT_KEYS for r in results)
    assert all(r["dataset"] == "fashion_mnist" for r in results)
    with open(os.path.join(out, "table.md")) as f:
        table = f.read()
    for r in results:
        # Memory columns equal the accounting module's figures.
        assert f"{memory.paper_training_mbytes(r['training_bytes']):.4f}" in table
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
        assert r["training_bytes"] == pytest.approx(sum(expected))
        assert h["memory_total_bytes"][-1] == pytest.approx(sum(expected))
        assert r["model_bytes"] == memory.network_bytes(r["params"])
        if r["method"] == "sp":
            assert r["training_bytes"] == 2 * memory.mo_bytes(266_610, r["value"], 784)
    dyn = next(r for r in results if r["method"] == "dynhp")
    ref = reproduce.reference(results, "fashion_mnist")
    assert dyn["budget_bytes"] == memory.mo_bytes(266_610, ref["value"], 784)  # best-SP budget
    assert max(dyn["history"]["mo_bytes"]) <= dyn["budget_bytes"]


def test_peers(tiny_run):
    _, results = tiny_run
    dense = next(r for r in results if r["method"] == "dense")
    assert dense["params"] == 266_610 == reproduce.LENET_PARAMS
    assert dense["training_bytes"] == 2 * memory.mo_bytes(266_610, dense["value"], 784)
    assert dense["epochs"] == len(dense["history"]["val_accuracy"]) == 2
    tfmot = [r for r in results if r["method"] == "tfmot"]
    if not tfmot:
        pytest.skip("tensorflow-model-optimization / tf_keras not installed")
    t = tfmot[0]
    assert t["params"] == 266_610  # dense matrices are stored
    assert t["nonzero_params"] < t["params"]
    assert t["training_bytes"] > 2 * memory.mo_bytes(266_610, t["value"], 784)  # + masks


def test_finished_runs_are_not_rerun(tiny_run, monkeypatch):
    out, results = tiny_run

    def fail(*args, **kwargs):
        raise AssertionError("a finished configuration was re-run")

    monkeypatch.setattr("keras_dynhp.models.DynHPModel.fit", fail)
    again = reproduce.run(out, TINY, lam=[0.05, 0.05, 0.5], verbose=0)
    assert [r["error_pct"] for r in again] == [r["error_pct"] for r in results]


def test_profile_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown profile"):
        reproduce.run(str(tmp_path), "huge")
    assert cli.main(["reproduce", "--profile", "huge"]) == 2  # argparse's usage error
