"""The one seam between keras_dynhp and Keras 3's backends (as Keras's `models/model.py` picks a trainer).

Only DynHP's train step differs per backend: it needs the gradient of the loss
with respect to each gated layer's pre-activations, besides the weights' (for
the gradient variance, eq. 8). Both seams get it the portable way: the model adds
a zero-valued *probe* to every pre-activation and the step differentiates the loss
with respect to the probes too. Everything else in the library uses `keras.ops`.

* :mod:`keras_dynhp.backend.tensorflow`: a stateful step with `tf.GradientTape`;
* :mod:`keras_dynhp.backend.jax`: a stateless step with `jax.value_and_grad`,
  mirroring Keras's own JAX trainer.

The PyTorch backend is not supported (see :func:`trainer`).

:func:`data_shards` reads how many ways a `keras.distribution` (JAX) splits
each batch, so that DynHP keeps its batches divisible by it.
"""

import keras

SUPPORTED = ("tensorflow", "jax")


def name():
    """The Keras backend in use (`keras.backend.backend()`)."""
    return keras.backend.backend()


def trainer():
    """The train-step mixin of the current backend.

    Raises:
        RuntimeError: For a backend keras_dynhp does not support.
    """
    backend = name()
    if backend == "tensorflow":
        from keras_dynhp.backend.tensorflow import VarianceTrainStep
    elif backend == "jax":
        from keras_dynhp.backend.jax import VarianceTrainStep
    else:
        raise RuntimeError(
            f"keras_dynhp supports the Keras backends {SUPPORTED}; KERAS_BACKEND is {backend!r}. "
            "Set KERAS_BACKEND=jax or tensorflow before importing keras.")
    return VarianceTrainStep


def data_shards():
    """How many devices share each batch under the current `keras.distribution` (1 without one).

    `DataParallel` and `ModelParallel` shard the batch axis over the device
    mesh's batch dimension; every batch must then be a multiple of its size.
    """
    try:
        distribution = keras.distribution.distribution()
    except (AttributeError, NotImplementedError):  # a backend without the distribution API
        return 1
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    axes = dict(zip(mesh.axis_names, mesh.shape))
    return int(axes.get(distribution.batch_dim_name, 1))


def data_devices_are_cpus():
    """Whether the current `keras.distribution` runs on CPU devices (simulated or real)."""
    distribution = keras.distribution.distribution()
    devices = distribution.device_mesh.devices.flatten() if distribution is not None else []
    return any(str(device).lower().startswith(("cpu", "tfrt_cpu")) for device in devices)


def framework_errors():
    """Exception types raised for a batch that cannot be used (to be reported clearly).

    tf.data raises TensorFlow's on every backend (it feeds them all); the
    TensorFlow backend raises the same type for ops on bad values.
    """
    import sys

    tf = sys.modules.get("tensorflow")  # without TensorFlow loaded, no tf.data batch was read
    return () if tf is None else (tf.errors.InvalidArgumentError,)
