"""The tfmot peer (keras_dynhp.experiments.tfmot_peer): its subprocess, faked and real."""

import importlib.util
import os

import pytest

from keras_dynhp import memory
from keras_dynhp.experiments import harness, tfmot_peer


@pytest.fixture(scope="module")
def data(fashion_subset):
    (x, y), (xt, yt) = fashion_subset
    return (x[:600], y[:600]), (xt[:200], yt[:200])


def _fake_tfmot(tmp_path, monkeypatch, body):
    """A `tensorflow_model_optimization` package whose import runs `body`, first on PYTHONPATH."""
    package = tmp_path / "fake" / "tensorflow_model_optimization"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(body + "\n")
    path = [str(tmp_path / "fake"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))


def test_missing_tfmot_gives_none_and_a_message(tmp_path, data, monkeypatch, capsys):
    _fake_tfmot(tmp_path, monkeypatch, 'raise ImportError("No module named tensorflow_model_optimization")')
    directory = tmp_path / "out"
    assert tfmot_peer.run_tfmot(data, 1, 128, 0.5, str(directory)) is None
    out = capsys.readouterr().out
    assert "tfmot peer skipped" in out and "keras_dynhp[compare]" in out
    assert not (directory / "result.json").exists() and not (directory / "data.npz").exists()
    # Through the harness, without a directory: the same.
    assert harness.run_config("tfmot", 128, data, 1, sparsity=0.5) is None


def test_a_failing_peer_raises_with_its_stderr(tmp_path, data, monkeypatch):
    _fake_tfmot(tmp_path, monkeypatch, 'raise RuntimeError("tfmot exploded")')
    with pytest.raises(RuntimeError, match="tfmot exploded"):
        tfmot_peer.run_tfmot(data, 1, 128, 0.5, str(tmp_path / "out"))


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_model_optimization") is None
    or importlib.util.find_spec("tf_keras") is None,
    reason="tensorflow-model-optimization / tf_keras not installed (the compare extra)",
)
def test_real_run_and_its_record(tmp_path, data, monkeypatch):
    directory = str(tmp_path / "tfmot")
    r = harness.run_config("tfmot", 128, data, 2, directory, sparsity=0.5, dataset="fashion_mnist")
    assert tuple(r) == harness.RESULT_KEYS + harness.TFMOT_KEYS
    assert r["label"] == "tfmot magnitude (bs 128)" and r["dataset"] == "fashion_mnist"
    assert r["params"] == harness.LENET_PARAMS  # the stripped model stores dense matrices
    assert r["nonzero_params"] < r["params"] and r["target_sparsity"] == 0.5
    assert r["architecture"] == [784, *harness.LENET_HIDDEN, 10]
    assert r["error_pct"] == pytest.approx(100 * (1 - r["test_accuracy"]))
    assert r["training_bytes"] > 2 * memory.mo_bytes(harness.LENET_PARAMS, 128, 784)  # + masks
    assert r["history"]["memory_total_bytes"][-1] == r["training_bytes"]
    assert len(r["history"]["val_accuracy"]) == r["epochs"] == 2
    assert r["tflite_bytes"] == os.path.getsize(os.path.join(directory, "model.tflite"))
    assert r["tflite_gzip_bytes"] < r["tflite_bytes"]

    def fail(*args, **kwargs):
        raise AssertionError("a finished peer was re-run")

    monkeypatch.setattr(tfmot_peer.subprocess, "run", fail)
    assert tfmot_peer.run_tfmot(data, 2, 128, 0.5, directory) == r
