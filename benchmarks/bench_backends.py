"""Seconds per 60,000-example epoch: plain Keras vs keras_dynhp SP and DynHP, per backend.

    python benchmarks/bench_backends.py --backends jax tensorflow --batches 16 100 512
    python benchmarks/bench_backends.py --network lenet5 --backends jax --batches 128

`--network lenet5`: LeNet-5-Caffe (20-50-800-500, `build_lenet5`) against a plain
Keras Conv2D/MaxPooling2D/Dense LeNet-5 of the same shape, on 28x28x1 images.

LeNet-300-100 on Fashion-MNIST (all 60,000 training images). For each backend
(a subprocess each: Keras fixes its backend at import) and batch size, the
variants are interleaved, round after round, one epoch at a time, and each keeps
its fastest epoch after the first (which compiles):

* `dense`: a plain Keras MLP of `keras.layers.Dense` (Adam, sparse CE);
* `sp`: `build_mlp` trained with mode="sp" (gates sampled per example);
* `dynhp`: mode="dynhp" with the gradient variance measured every step, its
  batch held at the given size by a budget that fits exactly one such batch
  (so the step cost is compared at equal batch size).

Prints one table per backend and the ratios to `dense` of the same backend.
Also: `--surgery` times one HP epoch at batch 100 with a pruning surgery and the
re-compilation of the next epoch.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def _worker(backend, batches, rounds, surgery, network="lenet300"):
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import keras_dynhp
    from keras_dynhp import memory
    from keras_dynhp.experiments.datasets import load_data

    conv = network == "lenet5"
    (x, y), _ = load_data("fashion_mnist", flatten=not conv)
    results = {}

    def dense_model():
        keras.utils.set_random_seed(0)
        if conv:
            layers = [keras.Input((28, 28, 1)), keras.layers.Conv2D(20, 5, activation="relu"),
                      keras.layers.MaxPooling2D(2), keras.layers.Conv2D(50, 5, activation="relu"),
                      keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                      keras.layers.Dense(500, activation="relu")]
        else:
            layers = [keras.Input((784,)), keras.layers.Dense(300, activation="relu"),
                      keras.layers.Dense(100, activation="relu")]
        model = keras.Sequential(layers + [keras.layers.Dense(10, activation="softmax")])
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def gated_model():
        return keras_dynhp.build_lenet5(seed=0) if conv else keras_dynhp.build_mlp([300, 100], seed=0)

    for batch in batches:
        models = {"dense": dense_model(), "sp": gated_model(), "dynhp": gated_model()}
        budget = memory.mo_bytes(models["dynhp"].count_params_stored(), batch, 784)
        best = {name: float("inf") for name in models}
        for r in range(rounds + 1):
            for name, model in models.items():
                start = time.perf_counter()
                if name == "dense":
                    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
                elif name == "sp":
                    model.fit(x, y, batch_size=batch, epochs=r + 1, initial_epoch=r, mode="sp",
                              verbose=0, seed=0)
                else:
                    model.fit(x, y, epochs=r + 1, initial_epoch=r, mode="dynhp", alpha_bs=0.98,
                              memory_budget=budget, initial_batch_size=batch, verbose=0, seed=0)
                seconds = time.perf_counter() - start
                if r > 0:  # round 0 compiles
                    best[name] = min(best[name], seconds)
        results[batch] = best
    out = {"backend": backend, "epochs": results}
    if surgery:
        model = keras_dynhp.build_mlp([300, 100], seed=0, l0_lambda=[0.05, 0.05, 0.5], droprate_init=0.7,
                                      learning_rate=3e-3)
        times, surg = [], []
        for epoch in range(4):
            start = time.perf_counter()
            h = model.fit(x, y, batch_size=100, epochs=epoch + 1, initial_epoch=epoch, mode="hp",
                          verbose=0, seed=0)
            times.append(time.perf_counter() - start)
            surg.append(h.history["surgery_ms"][-1])
        out["surgery"] = {"epoch_s": times, "surgery_ms": surg, "architecture": model.architecture()}
    print("RESULT " + json.dumps(out), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow"])
    parser.add_argument("--batches", nargs="+", type=int, default=[16, 100, 512])
    parser.add_argument("--rounds", type=int, default=2, help="timed epochs per variant (after one to compile)")
    parser.add_argument("--surgery", action="store_true")
    parser.add_argument("--network", default="lenet300", choices=("lenet300", "lenet5"))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args.worker, args.batches, args.rounds, args.surgery, args.network)
    rows = []
    for backend in args.backends:
        cmd = [sys.executable, __file__, "--worker", backend, "--rounds", str(args.rounds), "--network",
               args.network, "--batches", *map(str, args.batches)] + (["--surgery"] if args.surgery else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if not line:
            print(f"{backend}: failed\n{proc.stderr[-3000:]}")
            continue
        rows.append(json.loads(line[0][len("RESULT "):]))
    print(f"{'backend':<11} {'batch':>5} {'dense s':>8} {'SP s':>7} {'DynHP s':>8} {'SP/dense':>9} {'DynHP/dense':>12}")
    for r in rows:
        for batch, t in r["epochs"].items():
            print(f"{r['backend']:<11} {batch:>5} {t['dense']:>8.2f} {t['sp']:>7.2f} {t['dynhp']:>8.2f} "
                  f"{t['sp'] / t['dense']:>9.2f} {t['dynhp'] / t['dense']:>12.2f}")
    for r in rows:
        if "surgery" in r:
            s = r["surgery"]
            print(f"{r['backend']}: HP epochs at batch 100 {[round(t, 2) for t in s['epoch_s']]} s, surgery "
                  f"{[round(m, 1) for m in s['surgery_ms']]} ms, architecture {s['architecture']}")


if __name__ == "__main__":
    sys.exit(main())
