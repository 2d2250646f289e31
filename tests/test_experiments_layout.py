"""Library and harness apart: what each entry point imports, one command line, public-API scripts."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Prints, as JSON, the heavy modules and the keras_dynhp.experiments modules loaded by then.
_LOADED = """
import json, sys
heavy = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")})
experiments = sorted(m for m in sys.modules if m.startswith("keras_dynhp.experiments"))
print(json.dumps({"heavy": heavy, "experiments": experiments}))
"""


def _loaded_after(code):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code + _LOADED], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_imports_no_tensorflow_keras_or_harness():
    loaded = _loaded_after(
        "import contextlib, io, runpy, sys\n"
        "from keras_dynhp import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [cli.main(a) for a in (['--help'], ['train', '--help'], ['reproduce', '--help'],\n"
        "                                   ['data', 'info', '--help'], ['--version'])]\n"
        "    sys.argv = ['keras-dynhp', '--help']\n"
        "    try:\n"
        "        runpy.run_module('keras_dynhp', run_name='__main__')\n"
        "    except SystemExit as e:\n"
        "        codes.append(e.code)\n"
        "assert codes == [0] * 6, codes\n"
    )
    assert loaded == {"heavy": [], "experiments": []}


def test_the_library_imports_no_harness():
    loaded = _loaded_after("import keras_dynhp.layers, keras_dynhp.models, keras_dynhp.export\n")
    assert loaded["experiments"] == []


def test_harness_modules_import_no_keras():
    assert _loaded_after("import keras_dynhp.experiments\n") == {"heavy": [], "experiments": [
        "keras_dynhp.experiments"]}
    loaded = _loaded_after("from keras_dynhp.experiments import datasets, harness, report, reproduce, "
                           "tfmot_peer, user_data\n")
    assert loaded["heavy"] == []


def test_one_command_line():
    from keras_dynhp import cli
    from keras_dynhp.experiments import datasets, reproduce

    assert cli.PROFILE_CHOICES == tuple(reproduce.PROFILES)
    assert set(cli.DATASET_CHOICES) == set(datasets.DATASETS)
    assert not hasattr(reproduce, "main") and not hasattr(datasets, "_main")
    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/keras-dynhp data fetch" in makefile


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


@pytest.mark.parametrize("path", sorted((ROOT / "tflite").glob("*.py")) + [
    ROOT / "examples" / "reproduce_paper.py"], ids=lambda p: p.name)
def test_scripts_use_public_api_only(path):
    text = path.read_text()
    assert "sys.path" not in text
    for module, names in _imports(path):
        if module.split(".")[0] == "keras_dynhp":
            assert not any(part.startswith("_") for part in module.split(".") + names), (module, names)


def test_experiments_package_imports_nothing():
    tree = ast.parse((ROOT / "keras_dynhp" / "experiments" / "__init__.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


@pytest.mark.parametrize("script, command", [("convert.py", "export"), ("evaluate.py", "evaluate"),
                                             ("benchmark.py", "benchmark")])
def test_tflite_scripts_wrap_one_command(script, command):
    proc = subprocess.run([sys.executable, str(ROOT / "tflite" / script), "--help"], capture_output=True,
                          text=True, check=False, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {script}")
    from keras_dynhp import cli

    assert cli.COMMANDS[command][1].split()[0] in proc.stdout  # the command's description
