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
