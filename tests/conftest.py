import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def fashion_subset():
    """6,000 training and 2,000 test images of the real Fashion-MNIST."""
    from keras_dynhp.experiments import datasets

    try:
        (x, y), (xt, yt) = datasets.load_data("fashion_mnist")
    except datasets.DataNotFoundError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Fashion-MNIST is missing on CI: {e}")
        pytest.skip(f"Fashion-MNIST not available: {e}")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))[:6000]
    return (x[idx], y[idx]), (xt[:2000], yt[:2000])


@pytest.fixture(scope="session")
def trained(fashion_subset):
    """One hard-pruned DynHPModel shared by the export, LiteRT, on-device and retrain tests (about 3 s)."""
    import keras_dynhp

    (x, y), _ = fashion_subset
    # the paper's weighting and a constant rate: set for pruning something in 3 epochs
    model = keras_dynhp.build_mlp(
        [300, 100], seed=0, l0_lambda=[0.05, 0.05, 0.5], droprate_init=0.7, learning_rate=3e-3,
        penalty="louizos")
    model.fit(x, y, epochs=3, batch_size=64, mode="hp", verbose=0, seed=0, learning_rate_decay=None)
    return model


@pytest.fixture(scope="session")
def compact(trained):
    from keras_dynhp import export

    return export.strip(trained)


def shift(x, pixels=3):
    """Fashion-MNIST images moved right by `pixels` ("new data" from a shifted distribution)."""
    return np.roll(x.reshape(-1, 28, 28), pixels, axis=2).reshape(len(x), 784)


def keras_accuracy(model, x, y):
    return float((model.predict(x, batch_size=1000, verbose=0).argmax(1) == y).mean())


def cross_entropy(probs, y):
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)).mean())


@pytest.fixture(scope="session")
def mnist_images():
    """3,000 training and 1,000 test images of the real MNIST, shaped (n, 28, 28, 1)."""
    from keras_dynhp.experiments import datasets

    try:
        (x, y), (xt, yt) = datasets.load_data("mnist", flatten=False)
    except datasets.DataNotFoundError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"MNIST is missing on CI: {e}")
        pytest.skip(f"MNIST not available: {e}")
    idx = np.random.default_rng(0).permutation(len(x))[:3000]
    return (x[idx], y[idx]), (xt[:1000], yt[:1000])


@pytest.fixture(scope="session")
def trained_cnn(mnist_images):
    """A small gated LeNet-5 (8-16 channels, 64 hidden), 3 HP epochs on real MNIST down to 40 KB (about 10 s)."""
    import keras_dynhp

    (x, y), _ = mnist_images
    model = keras_dynhp.build_lenet5(filters=(8, 16), dense_units=64, seed=0, penalty="size",
                                     l0_lambda=0.05, droprate_init=0.3)
    model.fit(x, y, epochs=3, batch_size=64, mode="hp", verbose=0, seed=0, model_budget="40KB",
              learning_rate_decay=None)
    return model
