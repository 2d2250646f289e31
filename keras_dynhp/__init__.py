"""keras_dynhp: Dynamic Hard Pruning (DynHP) for Keras 3.

Train compact networks under a fixed memory budget, hard-prune neurons during
training, and ship the result to phones and Edge TPUs.

The public namespace is explicit (`__all__`) and loaded lazily, so that
`import keras_dynhp` and the `keras-dynhp` command line start without
TensorFlow; the first use of a name imports what it needs. The paper harness
(data sets, runs, reproduction, plots) is :mod:`keras_dynhp.experiments`, which
the library never imports. Because nothing is imported up front, load saved
models with :func:`keras_dynhp.load_model` (it registers the custom classes with
Keras before calling `keras.saving.load_model`).

Example:
    >>> import keras_dynhp
    >>> model = keras_dynhp.build_mlp([300, 100])          # doctest: +SKIP
    >>> model.fit(x_train, y_train, mode="dynhp")          # doctest: +SKIP
"""

import importlib

from keras_dynhp._version import __version__  # noqa: F401

# Public name -> module that defines it.
_EXPORTS = {
    # layers
    "L0Dense": "keras_dynhp.layers",
    "L0Conv2D": "keras_dynhp.layers",
    "FeatureSelect": "keras_dynhp.layers",
    "GatedLayer": "keras_dynhp.layers",
    "register_gated_layer": "keras_dynhp.layers",
    # model
    "DynHPModel": "keras_dynhp.models",
    "build_mlp": "keras_dynhp.models",
    "build_lenet5": "keras_dynhp.models",
    "load_model": "keras_dynhp.models",
    "prune": "keras_dynhp.convert",
    # policies
    "HardPruning": "keras_dynhp.pruning",
    "DynamicBatchSize": "keras_dynhp.batch_size",
    "FixedBatchSize": "keras_dynhp.batch_size",
    "ModelBudget": "keras_dynhp.budget",
    # data
    "make_dataset": "keras_dynhp.data",
    # export
    "strip": "keras_dynhp.export",
    "export_tflite": "keras_dynhp.export",
    "accuracy": "keras_dynhp.evaluation",
}
_SUBMODULES = (
    "batch_size", "budget", "callbacks", "convert", "data", "evaluation", "export", "layers", "litert", "memory",
    "models", "ondevice", "penalty", "pruning", "retrain", "surgery", "training",
)

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"keras_dynhp.{name}")
    else:
        raise AttributeError(f"module 'keras_dynhp' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
