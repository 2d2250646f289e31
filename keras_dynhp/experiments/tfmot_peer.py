"""Peer baseline: tfmot magnitude pruning of LeNet-300-100 (run in a subprocess).

`tensorflow-model-optimization` supports only Keras 2 (`tf_keras`), so
:func:`keras_dynhp.experiments.reproduce.run_tfmot` runs this module with
`TF_USE_LEGACY_KERAS=1` in its own process::

    TF_USE_LEGACY_KERAS=1 python -m keras_dynhp.experiments.tfmot_peer --data d.npz \\
        --epochs 20 --batch-size 128 --sparsity 0.8 --output out/

It trains with `prune_low_magnitude` and a `PolynomialDecay` schedule from 0 to
`--sparsity` over the first 2/3 of the steps, strips the wrappers, and writes
`result.json` (error, stored and non-zero parameters, `.tflite` size, the
paper's memory accounting) and `model.tflite`. Exit code 3 means tfmot or
tf_keras is not installed.

Memory accounting: during training tfmot keeps the *dense* kernels plus one
mask per kernel (and a scalar threshold), so each epoch's MO is
4 * (dense parameters + mask entries + batch x 784); the stripped model still
stores dense matrices (the zeros are only compressible, e.g. by gzip).
"""

import argparse
import gzip
import os
import sys
import time

from keras_dynhp._io import write_json

HIDDEN = (300, 100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--sparsity", type=float, required=True)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot
        import tf_keras
    except ImportError as e:
        print(f"tfmot peer needs `pip install keras_dynhp[compare]`: {e}", file=sys.stderr)
        return 3
    import numpy as np

    d = np.load(args.data)
    x, y, xt, yt = d["x"], d["y"], d["xt"], d["yt"]
    tf_keras.utils.set_random_seed(args.seed)
    sparsity = min(max(args.sparsity, 0.0), 0.99)
    steps = int(np.ceil(len(x) / args.batch_size)) * args.epochs
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
        end_step=max(1, (2 * steps) // 3), frequency=max(1, steps // (20 * max(args.epochs, 1))),
    )
    layers = [tf_keras.Input((x.shape[1],))]
    layers += [tf_keras.layers.Dense(u, activation="relu") for u in HIDDEN]
    layers += [tf_keras.layers.Dense(10, activation="softmax")]
    model = tf_keras.Sequential(layers)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(tf_keras.optimizers.Adam(args.learning_rate), "sparse_categorical_crossentropy",
                   metrics=["accuracy"])
    start = time.perf_counter()
    hist = pruned.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=2,
                      validation_data=(xt, yt),
                      callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    seconds = time.perf_counter() - start
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    pred = stripped.predict(xt, batch_size=1000, verbose=0)
    error = 100.0 * float((pred.argmax(-1) != yt).mean())
    weights = stripped.get_weights()
    dense_params = int(sum(w.size for w in weights))
    nonzero = int(sum(int(np.count_nonzero(w)) for w in weights))
    mask_entries = int(sum(w.size for w in weights if w.ndim == 2))
    converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
    tflite = converter.convert()
    path = os.path.join(args.output, "model.tflite")
    with open(path, "wb") as f:
        f.write(tflite)
    per_epoch = 4 * (dense_params + mask_entries + args.batch_size * x.shape[1])
    result = {
        "method": "tfmot", "value": args.batch_size, "config": f"tfmot_bs{args.batch_size}",
        "label": f"tfmot magnitude (bs {args.batch_size})", "epochs": args.epochs, "error": error,
        # What the stripped model stores: dense matrices, zeros included.
        "params": dense_params, "nonzero_params": nonzero, "target_sparsity": sparsity,
        "architecture": [x.shape[1], *HIDDEN, 10],
        "model_bytes": 4 * dense_params, "nonzero_bytes": 4 * nonzero,
        "training_memory_bytes": float(args.epochs * per_epoch),
        "final_batch_size": args.batch_size, "budget_bytes": None,
        "tflite_bytes": len(tflite), "tflite_gzip_bytes": len(gzip.compress(tflite)),
        "seconds": seconds,
        "history": {
            "error": [100.0 * (1.0 - a) for a in hist.history.get("val_accuracy", [])],
            "batch_size": [args.batch_size] * args.epochs,
            "memory_total_bytes": [per_epoch * (i + 1) for i in range(args.epochs)],
        },
    }
    write_json(os.path.join(args.output, "result.json"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
