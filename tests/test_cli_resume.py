"""`keras-dynhp train`: interruption, --resume, --overwrite, atomic checkpoints; corrupt inputs.

The kill test runs the real command in subprocesses: an uninterrupted run, a run killed with
SIGKILL after its second epoch, then `train --resume`; the resumed run must end with bitwise
the same weights and history (TensorFlow CPU backend).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_dynhp import _io, cli

# Small, but pruning before and after the kill (units shrink from epoch 2 on).
KILL_ARGS = ["train", "--subset", "2000", "--epochs", "4", "--hidden", "30,10", "--lambda", "0.5,0.5,1",
             "--gamma", "0.8", "--quiet"]
SMALL_ARGS = ["train", "--subset", "300", "--epochs", "2", "--hidden", "20,10", "--no-baseline",
              "--quiet"]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)


def _command(*args):
    return [sys.executable, "-m", "keras_dynhp", *args]


def _epochs(path):
    try:
        with open(path) as f:
            return len(json.load(f)["loss"])
    except (OSError, ValueError, KeyError):  # not written yet (writes are atomic: never half)
        return 0


def _history(path):
    with open(path) as f:
        history = json.load(f)
    history.pop("surgery_ms", None)  # a timing
    return history


def _assert_same_weights(a_path, b_path):
    import keras_dynhp

    a = keras_dynhp.load_model(a_path).get_weights()
    b = keras_dynhp.load_model(b_path).get_weights()
    assert [w.shape for w in a] == [w.shape for w in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # bitwise


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, fashion_subset):
    """The uninterrupted run (with its dense baseline), in its own process."""
    out = str(tmp_path_factory.mktemp("straight") / "run")
    subprocess.run(_command(*KILL_ARGS, "--output", out), env=_env(), check=True, capture_output=True)
    return out


@pytest.mark.parametrize("phase, watched", [("model", "history.json"),
                                            ("baseline", "baseline_history.json")])
def test_killed_run_resumes_to_the_same_weights(straight_run, tmp_path, phase, watched):
    out = str(tmp_path / "run")
    proc = subprocess.Popen(_command(*KILL_ARGS, "--output", out), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    try:
        while _epochs(os.path.join(out, watched)) < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no second epoch in time"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not os.path.exists(os.path.join(out, "summary.json"))  # killed mid-run
    import keras_dynhp

    # Whatever the moment of the kill, the kept model is whole: the last finished epoch.
    name = "model.keras" if phase == "model" else "baseline.keras"
    kept = keras_dynhp.load_model(os.path.join(out, name))
    if phase == "model":
        assert 1 <= kept.training_state["epoch"] <= 3
    resumed = subprocess.run(_command("train", "--resume", out), env=_env(), capture_output=True,
                             text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {out}" in resumed.stdout
    for name in ("model.keras", "compact.keras", "baseline.keras"):
        _assert_same_weights(os.path.join(straight_run, name), os.path.join(out, name))
    for name in ("history.json", "baseline_history.json"):
        assert _history(os.path.join(out, name)) == _history(os.path.join(straight_run, name)), name
    with open(os.path.join(straight_run, "summary.json")) as f:
        straight = json.load(f)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    for key in ("test_accuracy", "architecture", "training_bytes", "final_batch_size", "epochs"):
        assert summary["model"][key] == straight["model"][key], key
    assert summary["baseline"]["test_accuracy"] == straight["baseline"]["test_accuracy"]
    assert not [n for n in os.listdir(out) if n.endswith((".partial.keras", ".tmp"))]
    # A finished run given to --resume says so and changes nothing.
    again = subprocess.run(_command("train", "--resume", out), env=_env(), capture_output=True,
                           text=True, check=False)
    assert again.returncode == 0 and "this run is finished" in again.stdout


# --------------------------------------------------------------------------
# In-process: interruptions at chosen moments
# --------------------------------------------------------------------------


def test_save_keras_never_leaves_a_half_written_file(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"the previous epoch")

    class Dying:
        def save(self, filepath):
            with open(filepath, "wb") as f:
                f.write(b"PK\x03\x04 half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _io.save_keras(Dying(), path)
    assert path.read_bytes() == b"the previous epoch"
    assert os.listdir(tmp_path) == ["model.keras"]


def test_kill_during_the_checkpoint_write_keeps_the_previous_epoch(tmp_path, monkeypatch, capsys,
                                                                  fashion_subset):
    import keras

    import keras_dynhp

    saves = []
    save = keras.Model.save

    def dying_save(self, filepath, *args, **kwargs):
        saves.append(str(filepath))
        if len(saves) == 2:  # the checkpoint of epoch 2: half a file, then Ctrl-C
            with open(filepath, "wb") as f:
                f.write(b"PK\x03\x04 half")
            raise KeyboardInterrupt
        return save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", dying_save)
    out = tmp_path / "run"
    assert cli.main([*SMALL_ARGS, "--epochs", "3", "--units", "paper", "--output", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted: 1 of 3 epochs" in err and f"train --resume {out}" in err
    assert saves[1].endswith("model.keras.partial.keras")  # written aside, never over model.keras
    assert keras_dynhp.load_model(out / "model.keras").training_state["epoch"] == 1
    assert sorted(os.listdir(out)) == ["history.csv", "history.json", "model.keras", "run.json"]
    assert _epochs(out / "history.json") == 2  # one epoch ahead of the model: --resume cuts it
    monkeypatch.setattr(keras.Model, "save", save)
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 3 and history["memory_total_bytes"] == np.cumsum(
        history["mo_bytes"]).tolist()
    assert len((out / "history.csv").read_text().strip().splitlines()) == 4  # header + 3 epochs
    config = json.loads((out / "summary.json").read_text())["config"]
    assert config["units"] == "paper" and config["epochs"] == 3  # from run.json


def test_sigterm_stops_like_ctrl_c(tmp_path, fashion_subset):
    out = str(tmp_path / "run")
    proc = subprocess.Popen(_command(*SMALL_ARGS, "--epochs", "50", "--output", out), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while _epochs(os.path.join(out, "history.json")) < 1:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "keras-dynhp: warning: interrupted:" in err and f"train --resume {out}" in err
    assert "Traceback" not in err


def test_a_sigterm_landing_in_a_gc_callback_is_delivered_again():
    """Python drops exceptions raised in gc and weakref callbacks (JAX has one): the handler
    gets the dropped interrupt back from sys.unraisablehook and re-sends the signal."""
    import gc

    from keras_dynhp.cli import train

    restore = train._sigterm_as_interrupt()
    landed = []

    def callback(phase, info):
        if phase == "start" and not landed:
            landed.append(phase)
            signal.raise_signal(signal.SIGTERM)  # raises inside the callback: dropped by Python

    gc.callbacks.append(callback)
    try:
        with pytest.raises(KeyboardInterrupt):
            gc.collect()
            time.sleep(2)
    finally:
        gc.callbacks.remove(callback)
        restore()
    assert landed == ["start"]


# --------------------------------------------------------------------------
# --resume / --overwrite / a directory holding a run
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, fashion_subset):
    out = tmp_path_factory.mktemp("small") / "run"
    assert cli.main([*SMALL_ARGS, "--output", str(out)]) == 0
    return out


def _one_error_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-dynhp: error: "), err
    return lines[0]


def test_run_json_holds_the_flags(small_run):
    run = json.loads((small_run / "run.json").read_text())
    assert run["args"]["hidden"] == [20, 10] and run["args"]["subset"] == 300
    assert run["args"]["baseline"] is False and "--no-baseline" in run["command"]
    assert set(run["args"]) == set(cli.train.RUN_FLAGS)
    # the library's defaults, resolved and saved (a resumed run keeps them if defaults change)
    assert run["args"]["learning_rate_decay"] == "cosine" and run["args"]["penalty"] == "size"
    assert run["args"]["l0_lambda"] == [0.001] and run["args"]["droprate_init"] == 0.2


def test_a_run_saved_before_the_lr_decay_flag_resumes_at_a_constant_rate(small_run, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    run = json.loads((small_run / "run.json").read_text())
    del run["args"]["learning_rate_decay"]
    (old / "run.json").write_text(json.dumps(run))
    _, args = cli.train._read_run(str(old))
    assert args.learning_rate_decay == "none"


def test_a_directory_holding_a_run_is_refused(small_run, capsys):
    before = (small_run / "model.keras").read_bytes()
    assert cli.main([*SMALL_ARGS, "--output", str(small_run)]) == 2
    line = _one_error_line(capsys)
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert (small_run / "model.keras").read_bytes() == before


def test_resume_of_a_finished_run_says_so(small_run, capsys):
    assert cli.main(["train", "--resume", str(small_run)]) == 0
    assert "this run is finished" in capsys.readouterr().out
    # The same command with --resume appended (DIR taken from --output) too.
    assert cli.main([*SMALL_ARGS, "--output", str(small_run), "--resume"]) == 0
    assert "this run is finished" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "5"], "--epochs 5 differs from the run's --epochs 2"),
    (["--baseline"], "--baseline differs from the run's --no-baseline"),
    (["--budget", "1MiB"], "differs from the run's no --budget"),
    (["--overwrite"], "not both"),
    (["--output", "elsewhere"], "name different directories"),
])
def test_resume_flags_that_contradict_the_run(small_run, capsys, extra, message):
    assert cli.main(["train", "--resume", str(small_run), *extra]) == 2
    assert message in _one_error_line(capsys)


def test_resume_accepts_repeated_and_presentation_flags(small_run, capsys):
    assert cli.main(["train", "--resume", str(small_run), "--hidden", "20,10", "--subset", "300",
                     "--units", "paper", "--quiet"]) == 0
    assert "this run is finished" in capsys.readouterr().out


def test_overwrite_starts_again(tmp_path, capsys, fashion_subset):
    out = tmp_path / "run"
    assert cli.main([*SMALL_ARGS, "--epochs", "1", "--output", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    first = json.loads((out / "run.json").read_text())
    assert cli.main([*SMALL_ARGS, "--epochs", "1", "--seed", "1", "--output", str(out),
                     "--overwrite"]) == 0
    assert json.loads((out / "run.json").read_text())["args"]["seed"] == 1 != first["args"]["seed"]
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_resume_errors_name_the_file_and_the_check(small_run, tmp_path, capsys):
    assert cli.main(["train", "--resume", str(tmp_path / "missing")]) == 1
    assert "no such directory" in _one_error_line(capsys)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model.keras").write_bytes(b"")
    assert cli.main(["train", "--resume", str(tmp_path / "old")]) == 1
    assert "holds no run.json" in _one_error_line(capsys)

    def broken(name, data):
        run = tmp_path / name
        shutil.copytree(small_run, run)
        for f in ("summary.json", "summary.md"):  # an unfinished run
            (run / f).unlink()
        for file, content in data.items():
            (run / file).write_bytes(content)
        return str(run)

    model = (small_run / "model.keras").read_bytes()
    cases = [
        ({"model.keras": model[: len(model) // 2]}, "model.keras is not a .keras file: the zip"),
        ({"model.keras": os.urandom(4000)}, "model.keras is not a .keras file: the zip"),
        ({"model.keras": b""}, "model.keras is not a .keras file: it is empty"),
        ({"history.json": b'{"loss": ['}, "history.json: the JSON check failed"),
        ({"history.json": b'{"loss": [1.0]}'}, "the history check failed"),
        ({"run.json": b'{"args": {}}'}, "run.json is not the run.json of `keras-dynhp train`"),
        ({"run.json": b"[1, "}, "run.json: the JSON check failed"),
    ]
    for i, (data, message) in enumerate(cases):
        assert cli.main(["train", "--resume", broken(f"r{i}", data)]) == 1
        assert message in _one_error_line(capsys), data


# --------------------------------------------------------------------------
# Corrupt .keras, .tflite and IDX files
# --------------------------------------------------------------------------


def _damaged(source, tmp_path, how):
    data = source.read_bytes()
    path = tmp_path / f"{how}{source.suffix}"
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "random":
        data = np.random.default_rng(0).bytes(len(data))
    elif how == "empty":
        data = b""
    elif how == "altered":  # bytes changed in the middle, size kept
        middle = len(data) // 3
        data = data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:]
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("how, message", [
    ("truncated", "is not a .keras file: the zip archive check failed"),
    ("random", "is not a .keras file: the zip archive check failed"),
    ("empty", "is not a .keras file: it is empty"),
    ("altered", "is corrupt: the CRC-32 check of"),
])
def test_corrupt_keras_files(small_run, tmp_path, capsys, how, message):
    path = _damaged(small_run / "model.keras", tmp_path, how)
    for argv in (["evaluate", path, "--limit", "10"], ["export", path]):
        assert cli.main(argv) == 1
        line = _one_error_line(capsys)
        assert path in line and message in line


@pytest.mark.parametrize("how, message", [
    ("truncated", "LiteRT's flatbuffer check failed"),
    ("random", "the file identifier check failed"),
    ("empty", "is not a .tflite file: it is empty"),
])
def test_corrupt_tflite_files(small_run, tmp_path, capsys, how, message):
    path = _damaged(small_run / "model.tflite", tmp_path, how)
    for argv in (["evaluate", path, "--limit", "10"], ["benchmark", path, "--runs", "2"]):
        assert cli.main(argv) == 1
        line = _one_error_line(capsys)
        assert path in line and message in line


def test_corrupt_idx_files(small_run, tmp_path, monkeypatch, capsys):
    import gzip

    from keras_dynhp.experiments import datasets

    source = datasets._locate("fashion_mnist")
    if source.kind != "idx":
        pytest.skip("Fashion-MNIST is not held as IDX files here")
    for how in ("truncated", "altered"):
        directory = tmp_path / how
        directory.mkdir()
        for _, path in source.files:
            shutil.copy(path, directory)
        labels = next(p for p in directory.iterdir() if p.name.startswith("t10k-labels"))
        raw = labels.read_bytes()
        if how == "truncated":
            labels.write_bytes(raw[: len(raw) // 2])
        else:  # one label changed, the file still a valid (gzip) IDX file
            gz = raw[:2] == b"\x1f\x8b"
            content = bytearray(gzip.decompress(raw) if gz else raw)
            content[100] = (content[100] + 1) % 10
            labels.write_bytes(gzip.compress(bytes(content)) if gz else bytes(content))
        monkeypatch.setenv("KERAS_DYNHP_DATA_DIR", str(directory))
        assert cli.main(["evaluate", str(small_run / "model.keras"), "--limit", "10"]) == 1
        line = _one_error_line(capsys)
        assert "cannot load fashion_mnist" in line and str(labels) in line


def test_divergence_is_one_line(tmp_path, capsys, fashion_subset):
    out = tmp_path / "run"
    assert cli.main([*SMALL_ARGS, "--learning-rate", "1e9", "--output", str(out)]) == 1
    line = _one_error_line(capsys)
    assert "training diverged: The loss became" in line and "--overwrite" in line
    assert not (out / "summary.json").exists()
