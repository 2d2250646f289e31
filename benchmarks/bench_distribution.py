"""Seconds per epoch: one device against DataParallel over simulated CPU devices (JAX).

    python benchmarks/bench_distribution.py --devices 4 --batch 128 --epochs 3

LeNet-300-100, Fashion-MNIST (all 60,000 images), DynHP with its batch held at
`--batch` (a budget of exactly the network plus that batch, so both runs train
the same steps), gates and variance measured every step. Both variants run in
one subprocess each with `XLA_FLAGS=--xla_force_host_platform_device_count=N`;
one of them sets `keras.distribution.DataParallel` over the N devices. On a
CPU the "devices" share the same cores: the figure is the overhead of the
sharded program (partitioning, collectives), not a speed-up; on a machine with
several accelerators the same code splits each batch over them.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def _worker(parallel, batch, epochs):
    import keras

    import keras_dynhp
    from keras_dynhp import memory
    from keras_dynhp.experiments.datasets import load_data

    if parallel:
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=keras.distribution.list_devices()))
    (x, y), _ = load_data("fashion_mnist")
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model = keras_dynhp.build_mlp([300, 100], seed=0)
    budget = memory.mo_bytes(model.count_params_stored(), batch, 784)
    model.fit(x, y, epochs=epochs, mode="dynhp", memory_budget=budget, initial_batch_size=batch,
              gamma=0.0, verbose=0, seed=0, callbacks=[Timer()])
    print(json.dumps({"times": times}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--worker", choices=("single", "parallel"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker == "parallel", args.batch, args.epochs)
        return
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices}")
    best = {}
    for variant in ("single", "parallel"):  # one after the other: never two timings at once
        done = subprocess.run([sys.executable, __file__, "--worker", variant, "--batch", str(args.batch),
                               "--epochs", str(args.epochs)], capture_output=True, text=True, env=env,
                              check=False)
        if done.returncode:
            sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
        times = json.loads(done.stdout.strip().splitlines()[-1])["times"]
        best[variant] = min(times[1:] or times)  # the first epoch compiles
    print(f"DynHP, batch {args.batch}, fastest epoch after the first (s): one device {best['single']:.2f}, "
          f"DataParallel over {args.devices} simulated CPU devices {best['parallel']:.2f} "
          f"(ratio {best['parallel'] / best['single']:.2f})")


if __name__ == "__main__":
    main()
