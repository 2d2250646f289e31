"""Each Keras internal keras_dynhp relies on is still there (a failure names the Keras version)."""

import inspect
import os
import subprocess
import sys

import keras
import numpy as np
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


# The other private attributes keras_dynhp uses where no public API serves; each test
# fails with the Keras version when one disappears (the module that relies on it named).


def test_layer_losses_override_still_feeds_the_jax_loss():
    layer = keras.layers.Dense(1)
    assert isinstance(getattr(layer, "_losses_override", None), list), (
        f"{KERAS}: Layer._losses_override is gone; backend/jax.py passes the L0 penalty through it")


def test_model_tracker_still_locks_and_unlocks():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    tracker = getattr(model, "_tracker", None)
    assert callable(getattr(tracker, "unlock", None)) and callable(getattr(tracker, "lock", None)), (
        f"{KERAS}: Model._tracker.lock/unlock is gone; models.py adds layers after build with it")


def test_compiled_model_still_has_its_loss_tracker():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    assert isinstance(getattr(model, "_loss_tracker", None), keras.metrics.Mean), (
        f"{KERAS}: Model._loss_tracker is gone; models.py's train step reports the loss through it")


def test_progbar_logger_still_updates_through_update_progbar():
    assert callable(getattr(keras.callbacks.ProgbarLogger, "_update_progbar", None)), (
        f"{KERAS}: ProgbarLogger._update_progbar is gone; training.py filters the bar's logs there")


def test_functional_layers_still_keep_their_inbound_nodes():
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2)
    keras.Model(inputs, dense(inputs))
    assert len(getattr(dense, "_inbound_nodes", [])) == 1, (
        f"{KERAS}: Layer._inbound_nodes is gone; convert.py traces a model's Dense chain with it")


def test_built_layers_still_record_their_build_shapes():
    conv = keras.layers.Conv2D(2, 3)
    conv.build((None, 8, 8, 1))
    assert isinstance(getattr(conv, "_build_shapes_dict", None), dict), (
        f"{KERAS}: Layer._build_shapes_dict is gone; layers/conv.py reads a built layer's input shape there")


def test_optimizers_still_create_slots_through_add_variable_from_reference():
    optimizer = keras.optimizers.Adam()
    assert callable(getattr(optimizer, "add_variable_from_reference", None)), (
        f"{KERAS}: optimizers no longer have add_variable_from_reference; surgery.py records slots with it")
    variable = keras.Variable([1.0, 2.0])
    optimizer.build([variable])
    assert len(optimizer.variables) > 1  # the slots exist, built through it


def test_litert_interpreter_still_lists_its_ops():
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    assert callable(getattr(litert.Interpreter, "_get_ops_details", None)), (
        "ai_edge_litert's Interpreter._get_ops_details is gone; litert.py lists a file's ops with it")


def test_models_still_list_trainable_variables_in_tracked_layer_order():
    class Two(keras.Model):
        def __init__(self):
            super().__init__()
            self.blocks = [keras.layers.Dense(2, name="a"), keras.layers.Dense(3, name="b")]

        def call(self, x):
            return self.blocks[1](self.blocks[0](x))

    model = Two()
    model(np.zeros((1, 4), "float32"))
    assert hasattr(model, "_layers"), f"{KERAS} models no longer keep `_layers` (update order_tracked_layers)"
    _keras_internals.order_tracked_layers(model, [model.blocks[1], model.blocks[0]])
    expected = model.blocks[1].trainable_variables + model.blocks[0].trainable_variables
    assert [id(v) for v in model.trainable_variables] == [id(v) for v in expected], (
        f"{KERAS} no longer lists a model's variables in `_layers` order: swapped layers would "
        "save their optimizer state out of order (update order_tracked_layers)")
