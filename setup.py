"""Installs keras_dynhp."""

import re

from setuptools import find_packages, setup

with open("keras_dynhp/_version.py", encoding="utf-8") as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

setup(
    name="keras_dynhp",
    version=VERSION,
    description="Dynamic Hard Pruning (DynHP) of neural networks for Keras 3 and LiteRT",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_dynhp", "keras_dynhp.*"]),
    python_requires=">=3.10",
    install_requires=[
        # The Keras the tests ran on: keras_dynhp relies on a few private Keras attributes
        # (keras_dynhp/_keras_internals.py, tests/test_keras_internals.py).
        "keras>=3.15,<3.16",
        "tensorflow>=2.18,<3",
        "numpy>=1.26",
    ],
    extras_require={
        "dev": ["pytest>=8", "ruff>=0.5"],
        "tflite": ["ai-edge-litert>=1.2"],
        "docs": [
            "mkdocs>=1.6",
            "mkdocs-material>=9.5",
            "mkdocstrings[python]>=0.26",
            "mkdocstrings-python>=1.16",
            "latex2mathml>=3.77",  # maths typeset at build time (docs/hooks/mathml.py)
        ],
        "plots": ["matplotlib>=3.8"],
        # keras-dynhp train --data DIR: a folder of class sub-folders of images.
        "images": ["pillow>=10"],
        # keras.callbacks.TensorBoard: TensorFlow 2.21 no longer brings tensorboard itself.
        "tensorboard": ["tensorboard>=2.18"],
        # The fast backend on CPU (KERAS_BACKEND=jax); TensorFlow stays for tf.data and LiteRT.
        "jax": ["jax[cpu]>=0.4.34"],
        # keras-dynhp sweep --ray: each configuration a Ray task, on this machine or a cluster.
        "ray": ["ray>=2.9"],
        # tfmot works only with tf_keras (Keras 2): comparison benchmarks only.
        "compare": ["tensorflow-model-optimization>=0.8", "tf_keras>=2.18"],
    },
    entry_points={"console_scripts": ["keras-dynhp=keras_dynhp.cli:main"]},
    license="Apache-2.0",
)
