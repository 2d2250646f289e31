"""Seconds per epoch: SP training of LeNet-300-100 (L0Dense) vs a plain keras Dense MLP.

Same data (Fashion-MNIST train, 60,000 images), same optimizer (Adam 1e-3), same
tf.data pipeline, in one process. Epochs are timed inside one `fit` call
with a callback; the first epoch (tracing) is excluded and the median of the
timed epochs is reported.

    python benchmarks/bench_sp_vs_dense.py --epochs 3 --batch-sizes 16 100 512
"""

import argparse
import statistics
import time

import keras

import keras_dynhp
from keras_dynhp.data import make_dataset
from keras_dynhp.experiments.datasets import load_data


def plain_mlp(hidden=(300, 100)):
    inputs = keras.Input((784,))
    x = inputs
    for units in hidden:
        x = keras.layers.Dense(units, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch inside one `fit` call."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per configuration")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 100, 512])
    parser.add_argument("--dataset", default="fashion_mnist")
    args = parser.parse_args()
    (x, y), _ = load_data(args.dataset)
    print(f"{'batch':>6} {'dense s/epoch':>14} {'SP s/epoch':>11} {'ratio':>6}")
    for b in args.batch_sizes:
        ds = make_dataset(x, y, b, seed=0)
        timer = EpochTimer()
        plain_mlp().fit(ds, epochs=args.epochs + 1, verbose=0, callbacks=[timer])
        t_dense = timer.times[1:]  # drop the tracing epoch
        timer = EpochTimer()
        keras_dynhp.build_mlp([300, 100], seed=0).fit(
            x, y, batch_size=b, epochs=args.epochs + 1, mode="sp", verbose=0, seed=0, callbacks=[timer])
        t_sp = timer.times[1:]
        md, ms = statistics.median(t_dense), statistics.median(t_sp)
        print(f"{b:>6} {md:>14.2f} {ms:>11.2f} {ms / md:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
