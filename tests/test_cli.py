"""The `keras-dynhp` command line: artefacts, evaluate, export, benchmark, report, reproduce, errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_dynhp import cli

ARTEFACTS = ("model.keras", "compact.keras", "model.tflite", "history.csv", "history.json",
             "baseline_history.json", "units.png", "memory.png", "error.png", "batch_size.png",
             "summary.json", "summary.md", "memory_per_epoch.png", "model_size.png")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, fashion_subset):
    out = str(tmp_path_factory.mktemp("cli") / "run")
    code = cli.main(["train", "--dataset", "fashion_mnist", "--mode", "dynhp", "--subset", "2000",
                     "--epochs", "2", "--hidden", "30,10", "--lambda", "0.05,0.05,0.5",
                     "--output", out, "--quiet"])
    assert code == 0
    return out


def test_train_writes_every_artefact(run_dir, capsys):
    for name in ARTEFACTS:
        assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)
    rows = history if isinstance(history, list) else None
    epochs = len(rows) if rows is not None else len(history["loss"])
    assert epochs == 2
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["model"]["architecture"][0] <= 784
    with open(os.path.join(run_dir, "summary.md")) as f:
        assert "dense" in f.read()


def test_evaluate_reproduces_training_accuracy(run_dir, capsys):
    with open(os.path.join(run_dir, "summary.json")) as f:
        model = json.load(f)["model"]
    capsys.readouterr()
    assert cli.main(["evaluate", os.path.join(run_dir, "model.keras"), "--json"]) == 0
    keras_result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert keras_result["test_accuracy"] == model["test_accuracy"]  # exactly
    assert cli.main(["evaluate", os.path.join(run_dir, "model.tflite"), "--json"]) == 0
    tflite_result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(tflite_result["test_accuracy"] - model["test_accuracy"]) <= 0.005


def test_export_and_report(run_dir, tmp_path, capsys):
    path = str(tmp_path / "m16.tflite")
    assert cli.main(["export", os.path.join(run_dir, "model.keras"), "--quantization", "float16",
                     "--output", path]) == 0
    assert os.path.getsize(path) > 0
    os.remove(os.path.join(run_dir, "units.png"))
    capsys.readouterr()
    assert cli.main(["report", run_dir]) == 0
    out = capsys.readouterr().out
    assert "|" in out  # the Markdown table
    assert "- DynHP a=0.998: architecture" in out and "written to" in out  # the notes, the files (default alpha)
    assert os.path.getsize(os.path.join(run_dir, "units.png")) > 0


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "/nonexistent/model.keras"], "no such file"),
    (["train", "--budget", "lots"], "Cannot parse"),
    (["train", "--dataset", "cifar10"], "invalid choice"),
    (["train", "--lambda", "1,2,3,4,5", "--subset", "100", "--epochs", "1"], "--lambda"),
    (["train", "--budget", "1KiB", "--subset", "100", "--epochs", "1"], "too small"),
    (["report", "/nonexistent/run"], "nonexistent"),
    (["train", "--model-budget", "40B", "--subset", "100", "--epochs", "1"], "cannot be met"),
    (["train", "--penalty", "bytes"], "invalid choice"),
    # 2 MiB holds LeNet-300-100 + a batch the paper's way, not its gradients and Adam's moments
    (["train", "--mode", "dynhp", "--accounting", "full", "--budget", "2MiB", "--subset", "100",
      "--epochs", "1"], "full accounting"),
])
def test_user_errors_exit_nonzero_with_one_line(argv, message, capsys, tmp_path):
    if argv[0] == "train":
        argv = argv + ["--output", str(tmp_path / "out"), "--quiet"]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert message in err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("keras-dynhp: error:")


def test_wrong_kind_of_file(run_dir, capsys):
    assert cli.main(["export", os.path.join(run_dir, "history.json")]) != 0
    assert "expected a .keras" in capsys.readouterr().err


def test_missing_data_and_corrupt_model(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.keras"
    bad.write_text("not a zip")
    assert cli.main(["evaluate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a .keras file" in err
    monkeypatch.setenv("KERAS_DYNHP_DATA_DIR", str(tmp_path))  # holds no data set
    assert cli.main(["train", "--subset", "100", "--epochs", "1", "--quiet",
                     "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith("keras-dynhp: error: cannot load fashion_mnist")
    assert "Traceback" not in err
    # the places looked in and the two ways to fix it stay a list, one item a line
    assert sum(line.startswith("  - ") for line in lines) >= 2
    fixes = [line for line in lines if line.startswith("  * ")]
    assert len(fixes) == 2 and "keras-dynhp data fetch" in fixes[0] and "KERAS_DYNHP_DATA_DIR" in fixes[1]
    assert max(len(line) for line in lines if line.startswith(" " * 4)) <= 88  # wrapped for a terminal


def test_module_entry_point_has_no_traceback(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    ok = subprocess.run([sys.executable, "-m", "keras_dynhp", "--help"], capture_output=True,
                        text=True, env=env, check=False)
    assert ok.returncode == 0 and "train" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "keras_dynhp", "evaluate", str(tmp_path / "x.keras")],
                         capture_output=True, text=True, env=env, check=False)
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
    assert "keras-dynhp: error:" in bad.stderr


def test_interrupted_train_keeps_last_epoch_and_resumes(tmp_path, monkeypatch, capsys,
                                                        fashion_subset):
    import keras_dynhp

    saver = cli.train._epoch_saver

    def interrupting(model_path, history, json_path, csv_path, on_saved):
        def saved():  # Ctrl-C right after epoch 1 is saved
            on_saved()
            raise KeyboardInterrupt

        return saver(model_path, history, json_path, csv_path, saved)

    monkeypatch.setattr(cli.train, "_epoch_saver", interrupting)
    out = tmp_path / "run"
    code = cli.main(["train", "--subset", "500", "--epochs", "3", "--hidden", "20,10",
                     "--output", str(out), "--quiet", "--no-baseline"])
    assert code == 130
    err = capsys.readouterr().err
    assert "interrupted: 1 of 3 epochs" in err and f"keras-dynhp train --resume {out}" in err
    assert keras_dynhp.load_model(out / "model.keras").training_state["epoch"] == 1
    assert len((out / "history.csv").read_text().strip().splitlines()) == 2  # header + epoch 1
    monkeypatch.setattr(cli.train, "_epoch_saver", saver)
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0
    assert len((out / "history.csv").read_text().strip().splitlines()) == 4
    assert json.loads((out / "summary.json").read_text())["model"]["epochs"] == 3


def test_evaluate_counts_every_example(run_dir, capsys):
    # 250 images at 100 per invocation: the last, smaller batch counts too.
    capsys.readouterr()
    assert cli.main(["evaluate", os.path.join(run_dir, "model.tflite"), "--limit", "250",
                     "--batch-size", "100", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["test_examples"] == 250
    assert result["test_correct"] / 250 == pytest.approx(result["test_accuracy"])
    assert result["error_pct"] == pytest.approx(100 * (1 - result["test_accuracy"]))


def test_export_for_the_edge_tpu_and_on_device_training(run_dir, tmp_path, capsys):
    int8 = tmp_path / "m-int8.tflite"
    assert cli.main(["export", os.path.join(run_dir, "model.keras"), str(int8), "--quantization", "int8",
                     "--batch-size", "1", "--no-gather"]) == 0
    out = capsys.readouterr().out
    assert "full-integer: yes" in out
    with open(tmp_path / "m-int8.pixels.json") as f:
        pixels = json.load(f)
    assert 0 < len(pixels) <= 784
    trainable = tmp_path / "m-train.tflite"
    assert cli.main(["export", os.path.join(run_dir, "compact.keras"), "--output", str(trainable),
                     "--trainable"]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(trainable), "--limit", "300", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["kind"].startswith("tflite, trainable") and result["test_examples"] == 300
    assert cli.main(["benchmark", os.path.join(run_dir, "model.tflite"), "--runs", "20",
                     "--warmup", "2"]) == 0
    assert "| model.tflite |" in capsys.readouterr().out
    assert cli.main(["benchmark", str(trainable), "--runs", "5"]) == 1
    assert "on-device training file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["export", "MODEL", "a.tflite", "--output", "b.tflite"], "give the output path once"),
    (["export", "MODEL", "a.keras"], "must end in .tflite"),
    (["export", "MODEL", "--trainable", "--quantization", "int8"], "--trainable"),
])
def test_export_usage_errors(run_dir, argv, message, capsys):
    argv = [os.path.join(run_dir, "model.keras") if a == "MODEL" else a for a in argv]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_reproduce_help(capsys):
    assert cli.main(["reproduce", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--profile", "--datasets", "--lambda", "--budget", "--no-peers", "--output"):
        assert flag in out
    assert cli.main(["reproduce", "--lambda", "1,2"]) == 2
    assert "--lambda needs 1 or 3 values" in capsys.readouterr().err


def test_backend_choice(monkeypatch, capsys):
    import keras

    loaded = keras.backend.backend()
    assert cli.select_backend("auto") == loaded  # Keras already runs: its backend stays
    other = "jax" if loaded == "tensorflow" else "tensorflow"
    with pytest.raises(cli.UsageError, match=f"already running on {loaded}"):
        cli.select_backend(other)
    assert cli.main(["--backend", other, "data", "info", "--name", "mnist"]) == 2
    assert "already running" in capsys.readouterr().err
    code = ("import sys, os; from keras_dynhp import cli; "
            "print(cli.select_backend('auto'), os.environ['KERAS_BACKEND'], 'keras' in sys.modules)")
    env = dict(os.environ)
    env.pop("KERAS_BACKEND", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    import importlib.util

    expected = "jax" if importlib.util.find_spec("jax") else "tensorflow"
    assert out.stdout.split() == [expected, expected, "False"]


def test_train_with_a_model_budget_delivers_it(tmp_path, fashion_subset, capsys):
    out = str(tmp_path / "budget")
    code = cli.main(["train", "--dataset", "fashion_mnist", "--mode", "hp", "--subset", "1000",
                     "--epochs", "2", "--hidden", "30,10", "--penalty", "size", "--lambda", "0.001",
                     "--model-budget", "20KB", "--no-baseline", "--output", out, "--quiet"])
    assert code == 0
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["config"]["penalty"] == "size"
    assert summary["config"]["model_budget_bytes"] == 20_000
    assert summary["model"]["delivered_bytes"] <= 20_000
    assert summary["model"]["model_bytes"] <= 20_000  # hp: physically that small
    with open(os.path.join(out, "run.json")) as f:
        assert json.load(f)["args"]["model_budget"] == 20_000


def test_train_with_the_full_accounting_stays_within_it(tmp_path, fashion_subset):
    out = str(tmp_path / "full")
    code = cli.main(["train", "--dataset", "fashion_mnist", "--mode", "dynhp", "--subset", "1000",
                     "--epochs", "2", "--hidden", "30,10", "--accounting", "full", "--alpha-bs", "0.5",
                     "--no-baseline", "--output", out, "--quiet"])
    assert code == 0
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["config"]["accounting"] == "full"
    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    assert all(full <= history["budget_bytes"][0] for full in history["full_bytes"])
    assert all(paper < full for paper, full in zip(history["mo_bytes"], history["full_bytes"]))


def test_quiet_train_writes_nothing_to_stderr(tmp_path, fashion_subset):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the native libraries' own logging included
    out = subprocess.run(
        [sys.executable, "-m", "keras_dynhp", "train", "--mode", "hp", "--subset", "300", "--epochs", "1",
         "--hidden", "8", "--no-baseline", "--quiet", "--output", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert "|" in out.stdout  # the summary table is the output


def test_train_shows_no_native_start_up_lines_unless_asked(tmp_path, fashion_subset):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    out = subprocess.run(
        [sys.executable, "-m", "keras_dynhp", "train", "--mode", "hp", "--subset", "300", "--epochs", "1",
         "--hidden", "8", "--no-baseline", "--output", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    for native in ("absl::InitializeLog", "oneDNN", "cuda", "XNNPACK", "I0000", "W0000", "E0000"):
        assert native not in text, native
    assert "[hp] epoch 1/1" in out.stdout  # our progress is still shown
    assert "--native-logs" in subprocess.run([sys.executable, "-m", "keras_dynhp", "--help"], capture_output=True,
                                             text=True, env=env, timeout=120).stdout


def test_summary_notes_give_the_model_size_in_the_tables_unit():
    from keras_dynhp.cli import _output

    model = {"label": "DynHP a=0.998", "architecture": [319, 155, 76, 10], "model_budget_bytes": 250_000,
             "delivered_bytes": 248_904, "model_bytes": 248_904, "seconds": 1.0, "error_pct": 12.0,
             "params": 62_226, "training_bytes": 3_400_000}
    baseline = {"label": "Dense", "error_pct": 12.1, "params": 266_610, "training_bytes": 11_743_000}
    summary = {"model": model, "baseline": baseline, "config": {"dataset": "mnist", "epochs": 1},
               "train_examples": 10, "test_examples": 10, "reference": "Dense"}
    for units, size in (("KiB", "243.1 KiB"), ("paper", "0.243 MBytes")):
        table = _output._table(summary, units)
        notes = "\n".join(_output._notes(summary, {}, units))
        assert f"the compact model stores {size} (met)" in notes
        assert size.split()[0] in table  # the same figure, the same unit, in the table


def test_train_evaluate_and_export_on_a_users_npz_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    x = rng.integers(0, 60, (300, 6, 6)).astype(np.uint8)
    x[np.arange(300), 2 * y, :] = 255  # a bright row per class: learnable in a few epochs
    data = tmp_path / "shapes.npz"
    np.savez(data, x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:])
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(data), "--mode", "hp", "--epochs", "2", "--hidden", "8",
                     "--output", str(out), "--no-baseline", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_examples"] == 240 and summary["test_examples"] == 60
    assert summary["model"]["architecture"][0] == 36 and summary["model"]["architecture"][-1] == 3
    assert json.loads((out / "run.json").read_text())["args"]["data"] == str(data)
    capsys.readouterr()
    assert cli.main(["evaluate", str(out / "model.keras"), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "shapes" and result["test_examples"] == 60
    assert result["test_accuracy"] == pytest.approx(summary["model"]["test_accuracy"])
    assert cli.main(["export", str(out / "model.keras"), str(tmp_path / "m8.tflite"),
                     "--quantization", "int8", "--data", str(data)]) == 0
    np.savez(tmp_path / "bad.npz", x_train=x, y_train=y)
    capsys.readouterr()
    assert cli.main(["train", "--data", str(tmp_path / "bad.npz"), "--output", str(tmp_path / "r2")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.npz: missing array(s) x_test, y_test" in err[0]


def test_train_lenet5_on_images_and_evaluate_it(tmp_path, fashion_subset, capsys):
    out = tmp_path / "lenet"
    assert cli.main(["train", "--arch", "lenet5", "--mode", "hp", "--epochs", "1", "--subset", "300",
                     "--model-budget", "300KB", "--output", str(out), "--no-baseline", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["arch"] == "lenet5"
    assert summary["model"]["architecture"][0] == 1 and summary["model"]["architecture"][-1] == 10
    assert summary["model"]["model_bytes"] <= 300_000
    assert summary["baseline"]["architecture"] == [1, 20, 800, 500, 10]
    assert summary["baseline"]["params"] == 431_080  # the plain Keras LeNet-5-Caffe
    capsys.readouterr()
    assert cli.main(["evaluate", str(out / "compact.keras"), "--limit", "500", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_examples"] == 500
    assert cli.main(["train", "--arch", "lenet5", "--lambda", "1,2", "--output", str(tmp_path / "x")]) == 2
    assert "4 values for --arch lenet5" in capsys.readouterr().err


def test_train_a_users_own_keras_model(tmp_path, fashion_subset, capsys):
    import keras

    user = keras.Sequential([keras.Input((784,)), keras.layers.Dense(24, activation="relu"),
                             keras.layers.Dropout(0.1), keras.layers.Dense(10, activation="softmax")])
    user.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    user.save(tmp_path / "mine.keras")
    out = tmp_path / "run"
    assert cli.main(["train", "--model", str(tmp_path / "mine.keras"), "--mode", "hp", "--epochs", "1",
                     "--subset", "300", "--model-budget", "40KB", "--output", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"]["label"].startswith("Your Keras model")
    assert summary["baseline"]["params"] == user.count_params()
    assert summary["baseline"]["architecture"] == [784, 24, 10]
    assert summary["model"]["model_bytes"] <= 40_000 and summary["config"]["user_model"].endswith("mine.keras")
    capsys.readouterr()
    assert cli.main(["train", "--model", str(out / "model.keras"), "--output", str(tmp_path / "r2")]) == 1
    assert "already a DynHPModel" in capsys.readouterr().err
    assert cli.main(["train", "--model", str(tmp_path / "mine.keras"), "--arch", "lenet5",
                     "--output", str(tmp_path / "r3")]) == 2
