"""Runs one HP and one DynHP configuration with fixed seeds and writes their histories.

Used to check that a refactor changes no behaviour: run it before and after, then compare.

    python benchmarks/history_fingerprint.py --output before.json
    python benchmarks/history_fingerprint.py --output after.json --compare before.json

Fashion-MNIST, 6,000 training and 2,000 test images, LeNet-300-100 with
lambda [0.05, 0.05, 0.5], drop rate 0.7, Adam 3e-3 (so hard pruning happens within
the first epochs), 3 epochs: HP at batch 64, DynHP with alpha_bs 0.98 and the
memory of SP at batch 128 as budget. Seeds fixed (0).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _load():
    try:
        from keras_dynhp.experiments import datasets
    except ImportError:  # the layout before the harness moved
        from keras_dynhp import datasets
    import numpy as np

    (x, y), (xt, yt) = datasets.load_data("fashion_mnist")
    idx = np.random.default_rng(0).permutation(len(x))[:6000]
    return (x[idx], y[idx]), (xt[:2000], yt[:2000])


def run_all(epochs=3):
    import keras

    import keras_dynhp
    from keras_dynhp import memory

    (x, y), (xt, yt) = _load()
    out = {}
    configs = {
        "hp_bs64": dict(mode="hp", batch_size=64),
        "dynhp_a0.98": dict(mode="dynhp", alpha_bs=0.98,
                            memory_budget=memory.mo_bytes(
                                keras_dynhp.build_mlp([300, 100]).count_params_stored(), 128, 784)),
    }
    for name, kwargs in configs.items():
        keras.utils.set_random_seed(0)
        model = keras_dynhp.build_mlp([300, 100], l0_lambda=[0.05, 0.05, 0.5], droprate_init=0.7,
                                      learning_rate=3e-3, seed=0)
        history = model.fit(x, y, epochs=epochs, seed=0, validation_data=(xt, yt), verbose=0,
                            **kwargs)
        out[name] = {k: [float(v) for v in vs] for k, vs in history.history.items()
                     if k != "surgery_ms"}
        out[name]["architecture"] = model.architecture()
    return out


def compare(a, b, rtol=1e-6):
    """Lines describing every difference between two fingerprints (empty: identical)."""
    lines = []
    for run in sorted(set(a) | set(b)):
        ra, rb = a.get(run, {}), b.get(run, {})
        for key in sorted(set(ra) | set(rb)):
            va, vb = ra.get(key), rb.get(key)
            if va is None or vb is None:
                lines.append(f"{run}.{key}: only in {'after' if va is None else 'before'}")
                continue
            same = len(va) == len(vb) and all(
                abs(p - q) <= rtol * max(1.0, abs(p), abs(q)) for p, q in zip(va, vb))
            if not same:
                lines.append(f"{run}.{key}: {va} vs {vb}")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--compare", default=None, help="an earlier output to compare against")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    result = run_all(args.epochs)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    for run, h in result.items():
        print(f"{run}: architecture {h['architecture']}, batch {h['batch_size']}, "
              f"val_accuracy {[round(v, 4) for v in h['val_accuracy']]}")
    if args.compare:
        with open(args.compare) as f:
            diffs = compare(json.load(f), result)
        print("identical histories" if not diffs else "\n".join(["DIFFERENCES:"] + diffs))
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
