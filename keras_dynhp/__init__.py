"""keras_dynhp: Dynamic Hard Pruning (DynHP) for Keras 3.

Train compact networks under a fixed memory budget, hard-prune neurons during
training, and ship the result to phones and Edge TPUs.

Example:
    >>> import keras_dynhp
    >>> model = keras_dynhp.build_mlp([300, 100])          # doctest: +SKIP
    >>> model.fit(x_train, y_train, mode="dynhp")          # doctest: +SKIP
"""

__version__ = "0.1.0"

from keras_dynhp import datasets, export, memory  # noqa: F401
from keras_dynhp.data import make_dataset  # noqa: F401
from keras_dynhp.layers import L0Dense, FeatureSelect  # noqa: F401
from keras_dynhp.models import DynHPModel, build_mlp  # noqa: F401
from keras_dynhp import batch_size, callbacks, surgery  # noqa: F401
from keras_dynhp.export import export_tflite, strip  # noqa: F401
from keras_dynhp import ondevice, retrain  # noqa: F401
from keras_dynhp import report, reproduce  # noqa: F401
