"""Milliseconds per hard-pruning surgery on LeNet-300-100 with a built Adam optimizer.

    python benchmarks/bench_surgery.py --rounds 10

Each round builds LeNet-300-100, trains one step (so Adam's moments exist), marks
about 10% of the units of every layer as rarely active and times
`keras_dynhp.surgery.prune_model` (layers rebuilt smaller, Adam moments sliced).
Prints the median and minimum over the rounds. To compare two checkouts, run it
alternately with `PYTHONPATH=<checkout>` (interleaved, same machine state).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def one_round(seed):
    import keras_dynhp
    from keras_dynhp import surgery

    model = keras_dynhp.build_mlp([300, 100], seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.random((64, 784), dtype="float32")
    model.fit(x, rng.integers(0, 10, 64), batch_size=64, epochs=1, verbose=0)
    for layer in model.gated_layers:
        n = layer.gate_active_count.shape[0]
        layer.gate_observations.assign(100.0)
        layer.gate_active_count.assign((rng.random(n) > 0.1).astype("float32") * 100.0)
    start = time.perf_counter()
    report = surgery.prune_model(model, gamma=0.5)
    return 1000.0 * (time.perf_counter() - start), report["units_after"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    times = []
    for r in range(args.rounds):
        ms, units = one_round(r)
        times.append(ms)
    print(f"surgery ms: median {np.median(times):.1f}, min {min(times):.1f} over {args.rounds} rounds "
          f"(last: units after {units})")


if __name__ == "__main__":
    main()
