"""The private Keras attributes keras_dynhp relies on, in one place.

Each helper here touches something Keras does not promise to keep. Each has a
test in `tests/test_keras_internals.py` that fails with a message naming the
Keras version when the internal changes, so a Keras upgrade breaks there
first, not deep inside a training run.
"""

import contextlib
import sys


def _lazy_tensorflow():
    """Keras's lazy handle on TensorFlow (`keras.src.utils.module_utils.tensorflow`), or None."""
    try:
        from keras.src.utils import module_utils
    except ImportError:
        return None
    lazy = getattr(module_utils, "tensorflow", None)
    return lazy if lazy is not None and hasattr(lazy, "_available") and hasattr(lazy, "module") else None


@contextlib.contextmanager
def tensorflow_left_unloaded():
    """Lets Keras save and load `.keras` files without importing TensorFlow.

    Keras's `serialize_keras_object` asks `tf.available` (which imports
    TensorFlow: 300-580 MiB on this machine) only to test whether an object is
    a `tf.TensorShape`; none can be while TensorFlow is not loaded, so within
    this block Keras is told TensorFlow is unavailable. Nothing changes once
    TensorFlow is loaded, or where the internal is missing (a newer Keras).
    """
    lazy = _lazy_tensorflow()
    if lazy is None or "tensorflow" in sys.modules or lazy.module is not None:
        yield
        return
    before = lazy._available
    lazy._available = False
    try:
        yield
    finally:
        if lazy.module is None:  # nothing imported it meanwhile
            lazy._available = before


def set_random_seed(seed):
    """`keras.utils.set_random_seed(seed)` without importing TensorFlow when it is not loaded.

    Keras seeds Python, NumPy, the backend and, if `tf.available`, TensorFlow
    (importing it to ask: 300-580 MiB in a JAX process). A JAX run that has
    not loaded TensorFlow has no TensorFlow randomness to seed; keras_dynhp
    seeds its own `tf.data` shuffles explicitly.
    """
    import keras

    with tensorflow_left_unloaded():
        keras.utils.set_random_seed(seed)


def order_tracked_layers(model, order):
    """Puts `model`'s tracked sub-layers in the given order (the rest after them, as they were).

    A subclassed Keras model lists its sub-layers, hence its
    `trainable_variables` and the optimizer slots built on them, in the order
    its tracker met them (`Layer._layers`). Swapping layers in place (hard
    pruning's copies) appends the new ones at the end; a model saved then would
    hold its optimizer state in an order that a freshly loaded model (tracked in
    construction order) does not share. Putting the construction order back
    after every swap keeps the two the same.

    Args:
        model: A Keras layer or model.
        order: Its sub-layers in the wanted order.
    """
    position = {id(layer): k for k, layer in enumerate(order)}
    tracked = model._layers
    tracked.sort(key=lambda layer: position.get(id(layer), len(order)))
