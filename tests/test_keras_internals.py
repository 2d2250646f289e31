"""Each Keras internal keras_dynhp relies on is still there (a failure names the Keras version)."""

import inspect
import os
import subprocess
import sys

import keras
import pytest

from keras_dynhp import _keras_internals

KERAS = f"Keras {keras.__version__}"


def test_keras_still_has_its_lazy_tensorflow_handle():
    assert _keras_internals._lazy_tensorflow() is not None, (
        f"{KERAS} no longer has keras.src.utils.module_utils.tensorflow with `_available` and "
        "`module`: saving and seeding on JAX will load TensorFlow again (update tensorflow_left_unloaded)")


def test_tensorflow_left_unloaded_changes_nothing_once_tensorflow_is_loaded():
    import tensorflow as tf  # loaded by this (TensorFlow) test process anyway

    lazy = _keras_internals._lazy_tensorflow()
    with _keras_internals.tensorflow_left_unloaded():
        assert lazy.available and tf.TensorShape  # TensorShape checks still work


def test_jax_fit_seed_save_and_load_never_load_tensorflow():
    """A JAX run that prunes, seeds, saves and loads keeps TensorFlow (300-580 MiB) out (#26)."""
    code = (
        "import sys, numpy as np, keras_dynhp\n"
        "from keras_dynhp import _keras_internals\n"
        "_keras_internals.set_random_seed(0)\n"
        "x = np.random.default_rng(0).random((256, 20), dtype='float32'); y = np.arange(256) % 4\n"
        "m = keras_dynhp.build_mlp([12, 8], input_dim=20, num_classes=4, seed=0)\n"
        "m.fit(x, y, epochs=2, mode='hp', batch_size=32, model_budget=600, verbose=0)\n"
        "path = sys.argv[1] + '/m.keras'\n"
        "m.save(path)\n"
        "back = keras_dynhp.load_model(path)\n"
        "assert back.architecture() == m.architecture(), (back.architecture(), m.architecture())\n"
        "np.testing.assert_allclose(back.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-6)\n"
        "print('tensorflow' in sys.modules)\n")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
        out = subprocess.run([sys.executable, "-c", code, tmp], capture_output=True, text=True, env=env,
                             timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "False", f"{KERAS} loaded TensorFlow"


def test_keras_jax_fit_still_stores_its_state_as_jax_state():
    """backend/jax.py skips Keras's tracking for `_jax_state` (set after every step)."""
    pytest.importorskip("jax")
    from keras.src.backend.jax.trainer import JAXTrainer

    from keras_dynhp.backend.jax import VarianceTrainStep

    assert "self._jax_state = {" in inspect.getsource(JAXTrainer.fit), (
        f"{KERAS}'s JAX fit no longer stores `self._jax_state` after each step: the untracked "
        "attribute in keras_dynhp/backend/jax.py is dead code (remove it or follow the new name)")

    class Probe(VarianceTrainStep, keras.layers.Layer):
        pass

    probe = Probe()
    state = {"trainable_variables": [keras.Variable(1.0)]}
    probe._jax_state = state
    assert probe.__dict__["_jax_state"] is state  # stored as is, not wrapped by the tracker
