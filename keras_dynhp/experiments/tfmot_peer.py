"""Peer baseline: tfmot magnitude pruning of LeNet-300-100, run in a subprocess.

`tensorflow-model-optimization` supports only Keras 2 (`tf_keras`), so
:func:`run_tfmot` (what :func:`keras_dynhp.experiments.harness.run_config` runs
for method "tfmot") starts this module with `TF_USE_LEGACY_KERAS=1` in its own
process; it is not a user-facing program::

    TF_USE_LEGACY_KERAS=1 python -m keras_dynhp.experiments.tfmot_peer --data d.npz \\
        --epochs 20 --batch-size 128 --sparsity 0.8 --output out/

The subprocess trains with `prune_low_magnitude` and a `PolynomialDecay`
schedule from 0 to `--sparsity` over the first 2/3 of the steps, strips the
wrappers, and writes `model.tflite` and `result.json`: a result record of the
harness (:data:`~keras_dynhp.experiments.harness.RESULT_KEYS`) plus
`nonzero_params`, `tflite_gzip_bytes` and `target_sparsity`. Exit status 3
means tfmot or tf_keras is not installed.

Memory accounting: during training tfmot keeps the *dense* kernels plus one
mask per kernel (and a scalar threshold), so each epoch's MO is
4 * (dense parameters + mask entries + batch x input width); the stripped model
still stores dense matrices (the zeros are only compressible, e.g. by gzip).
"""

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time

from keras_dynhp._io import write_bytes, write_json
from keras_dynhp.experiments import harness

MISSING = 3  # exit status of the subprocess when tfmot or tf_keras is not installed


def run_tfmot(data, epochs, batch_size, sparsity, directory=None, hidden=harness.LENET_HIDDEN,
              learning_rate=1e-3, seed=0, dataset=None):
    """Trains the tfmot peer in a subprocess; returns its result record (or None).

    Needs the `compare` extra (`pip install keras_dynhp[compare]`); returns
    None, with a message, when tfmot or tf_keras is not installed. A
    `directory` holding `result.json` is not re-run.

    Args:
        data: `((x, y), (xt, yt))`.
        epochs: Epochs.
        batch_size: Batch size.
        sparsity: Final weight sparsity (clipped to [0, 0.99]).
        directory: Where `result.json` and `model.tflite` go (None: a temporary directory).
        hidden: Hidden layer widths.
        learning_rate: Adam learning rate.
        seed: Seed.
        dataset: Data set name, recorded in the result.

    Returns:
        The record (see :func:`keras_dynhp.experiments.harness.run_config`), or None.

    Raises:
        RuntimeError: The subprocess failed (its stderr's end is in the message).
    """
    import numpy as np

    if directory is None:
        with tempfile.TemporaryDirectory(prefix="keras_dynhp_tfmot_") as tmp:
            return run_tfmot(data, epochs, batch_size, sparsity, tmp, hidden, learning_rate, seed,
                             dataset)
    done = harness.finished(directory)
    if done is not None:
        return done
    (x, y), (xt, yt) = data
    npz = os.path.join(directory, "data.npz")
    np.savez(npz, x=x, y=y, xt=xt, yt=yt)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "keras_dynhp.experiments.tfmot_peer", "--data", npz,
           "--epochs", str(epochs), "--batch-size", str(batch_size),
           "--sparsity", repr(float(sparsity)), "--hidden", ",".join(str(int(u)) for u in hidden),
           "--learning-rate", repr(float(learning_rate)), "--seed", str(seed), "--output", directory]
    if dataset is not None:
        cmd += ["--dataset", dataset]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    finally:
        os.remove(npz)
    if proc.returncode == MISSING:
        lines = proc.stderr.strip().splitlines()
        print(f"[harness] tfmot peer skipped: {lines[-1] if lines else 'tfmot is not installed'}",
              flush=True)
        return None
    if proc.returncode != 0:
        raise RuntimeError(f"The tfmot peer failed (exit status {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return harness.read_result(os.path.join(directory, "result.json"))


def main(argv=None):
    """The subprocess: trains, strips and converts; writes result.json. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m keras_dynhp.experiments.tfmot_peer",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help=".npz file with x, y, xt, yt")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--sparsity", type=float, required=True)
    parser.add_argument("--hidden", default="300,100", help="hidden widths, e.g. 300,100")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:  # tfmot first: when it is missing, this fails before TensorFlow is loaded
        import tensorflow_model_optimization as tfmot
        import tf_keras
    except ImportError as e:
        print(f"tfmot peer needs `pip install keras_dynhp[compare]`: {e}", file=sys.stderr)
        return MISSING
    import numpy as np
    import tensorflow as tf

    # keras_dynhp.evaluation imports no Keras: its `accuracy` runs this tf_keras model too.
    from keras_dynhp.evaluation import accuracy

    hidden = [int(u) for u in args.hidden.split(",")]
    d = np.load(args.data)
    x, y, xt, yt = d["x"], d["y"], d["xt"], d["yt"]
    num_classes = int(max(y.max(), yt.max())) + 1
    tf_keras.utils.set_random_seed(args.seed)
    sparsity = min(max(args.sparsity, 0.0), 0.99)
    steps = int(np.ceil(len(x) / args.batch_size)) * args.epochs
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
        end_step=max(1, (2 * steps) // 3), frequency=max(1, steps // (20 * max(args.epochs, 1))),
    )
    # tfmot wraps tf_keras layers only, hence this tf_keras twin of harness.build_dense.
    layers = [tf_keras.Input((x.shape[1],))]
    layers += [tf_keras.layers.Dense(u, activation="relu") for u in hidden]
    layers += [tf_keras.layers.Dense(num_classes, activation="softmax")]
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
    test_accuracy = accuracy(stripped, xt, yt)
    weights = stripped.get_weights()
    dense_params = int(sum(w.size for w in weights))
    nonzero = int(sum(int(np.count_nonzero(w)) for w in weights))
    mask_entries = int(sum(w.size for w in weights if w.ndim == 2))
    # A tf_keras model: keras_dynhp.export (Keras 3) cannot take it, so tf_keras's own converter.
    tflite = tf.lite.TFLiteConverter.from_keras_model(stripped).convert()
    write_bytes(os.path.join(args.output, "model.tflite"), tflite)
    per_epoch = 4 * (dense_params + mask_entries + args.batch_size * x.shape[1])
    epochs = len(hist.history.get("loss", []))
    result = harness.new_record(
        "tfmot", args.batch_size,
        dataset=args.dataset,
        epochs=epochs,
        test_accuracy=test_accuracy,
        # What the stripped model stores: dense matrices, zeros included.
        params=dense_params,
        architecture=[int(x.shape[1]), *hidden, num_classes],
        model_bytes=4 * dense_params,
        training_bytes=epochs * per_epoch,
        final_batch_size=args.batch_size,
        tflite_bytes=len(tflite),
        seconds=seconds,
        history={
            **hist.history,
            "batch_size": [args.batch_size] * epochs,
            "mo_bytes": [per_epoch] * epochs,
            "memory_total_bytes": [per_epoch * (i + 1) for i in range(epochs)],
        },
        nonzero_params=nonzero,
        tflite_gzip_bytes=len(gzip.compress(tflite)),
        target_sparsity=sparsity,
    )
    write_json(os.path.join(args.output, "result.json"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
