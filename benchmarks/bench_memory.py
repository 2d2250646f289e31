"""Memory of DynHP training: the paper's accounting, the full accounting, the backend, the process.

    python benchmarks/bench_memory.py --backends jax tensorflow --epochs 3
    python benchmarks/bench_memory.py --cli --backends jax tensorflow --epochs 3

LeNet-300-100 on Fashion-MNIST (all 60,000 images), DynHP (alpha 0.98, budget
1433 KiB, `build_mlp` defaults), one subprocess per backend (Keras fixes its
backend at import). At every epoch end it prints, side by side:

* `paper`: the paper's MO (weights and biases + one input batch), `mo_bytes`;
* `full`: :func:`keras_dynhp.memory.full_accounting` (eq. 14), `full_bytes`;
* `live`: the bytes of the arrays the backend holds between steps: on JAX
  every live device array (`jax.live_arrays()`, which includes the data
  pipeline's prefetched batches and anything else alive); on TensorFlow the
  model's and optimizer's variables (TF exposes no list of live tensors);
* `rss` / `peak`: the process's resident memory now and its peak so far.

On JAX it then compiles one DynHP train step at the last batch size and prints
XLA's own memory analysis (arguments: weights, gates, optimizer state, the batch;
temporaries: gradients, activations and whatever the compiler keeps) beside the
full accounting's terms. Runtime overhead (interpreter, libraries, compiled code,
allocator caches) is what `peak` has beyond the tensors.

`--cli` instead measures the peak RSS of the whole `keras-dynhp train` command
(with and without its dense baseline) with `/usr/bin/time -v`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile


def _mib(n):
    return n / 2**20


def _worker(backend, epochs):
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import keras_dynhp
    from keras_dynhp import memory
    from keras_dynhp.experiments.datasets import load_data

    def current_rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def live_bytes(model):
        if backend == "jax":
            import jax

            return sum(a.nbytes for a in jax.live_arrays())
        variables = list(model.variables) + list(model.optimizer.variables)
        return sum(int(v.numpy().nbytes) for v in variables)

    (x, y), _ = load_data("fashion_mnist")
    rows = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rows.append({"epoch": epoch + 1, "batch": int(logs["batch_size"]), "paper": logs["mo_bytes"],
                         "full": logs["full_bytes"], "live": live_bytes(self.model), "rss": current_rss(),
                         "peak": memory.peak_rss_bytes()})

    start_rss = current_rss()
    keras.utils.set_random_seed(0)
    model = keras_dynhp.build_mlp([300, 100], seed=0)
    model.fit(x, y, epochs=epochs, mode="dynhp", alpha_bs=0.98, memory_budget="1433KiB", verbose=0,
              callbacks=[Probe()], seed=0)
    result = {"backend": backend, "rows": rows, "start_rss": start_rss,
              "terms": memory.full_accounting(model, rows[-1]["batch"], measures_variance=True)}
    if backend == "jax":
        result["xla"] = _xla_step_memory(model, x, y, rows[-1]["batch"])
    print(json.dumps(result))


def _xla_step_memory(model, x, y, batch):
    """XLA's memory analysis of one compiled DynHP train step (JAX)."""
    import jax
    import numpy as np

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    data = (np.asarray(x[:batch]), np.asarray(y[:batch]))
    analysis = jax.jit(model.train_step).lower(state, data).compile().memory_analysis()
    if analysis is None:
        return None
    return {k: int(getattr(analysis, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp", "alias")}


def _table(result):
    print(f"\n## {result['backend']}: LeNet-300-100, Fashion-MNIST, DynHP a=0.98, 1433 KiB")
    print(f"process RSS before training: {_mib(result['start_rss']):.0f} MiB\n")
    print("| epoch | batch | paper (KiB) | full (KiB) | live arrays (KiB) | RSS (MiB) | peak RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        print(f"| {r['epoch']} | {r['batch']} | {r['paper'] / 1024:.1f} | {r['full'] / 1024:.1f} | "
              f"{r['live'] / 1024:.1f} | {_mib(r['rss']):.0f} | {_mib(r['peak']):.0f} |")
    terms = result["terms"]
    print("\nfull accounting at the last batch (KiB): "
          + ", ".join(f"{k} {v / 1024:.1f}" for k, v in terms.items()))
    xla = result.get("xla")
    if xla:
        held = terms["weights"] + terms["gates"] + terms["optimizer"] + terms["input_batch"]
        transient = terms["gradients"] + terms["activations"]
        print(f"XLA, one compiled train step (KiB): arguments {xla['argument'] / 1024:.1f} "
              f"(full accounting's weights + gates + optimizer + input batch: {held / 1024:.1f}), "
              f"temporaries {xla['temp'] / 1024:.1f} (gradients + activations: {transient / 1024:.1f}), "
              f"outputs {xla['output'] / 1024:.1f}")


def _cli_peaks(backends, epochs):
    print("\n## peak RSS of `keras-dynhp train` (DynHP, Fashion-MNIST, /usr/bin/time -v)\n")
    print("| backend | dense baseline | peak RSS (MiB) | wall (s) |")
    print("|---|---|---:|---:|")
    exe = os.path.join(os.path.dirname(sys.executable), "keras-dynhp")
    for backend in backends:
        for baseline in (True, False):
            with tempfile.TemporaryDirectory() as out:
                cmd = ["/usr/bin/time", "-v", exe, "--backend", backend, "train", "--dataset", "fashion_mnist",
                       "--mode", "dynhp", "--epochs", str(epochs), "--output", out, "--overwrite", "--quiet",
                       "--baseline" if baseline else "--no-baseline"]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                print(f"| {backend} | {baseline} | failed: {done.stderr.strip().splitlines()[-1]} | |")
                continue
            fields = dict(line.strip().rsplit(": ", 1) for line in done.stderr.splitlines()
                          if ": " in line and line.startswith("\t"))
            peak = int(fields["Maximum resident set size (kbytes)"]) / 1024
            wall = fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"]
            minutes, seconds = wall.rsplit(":", 1)
            print(f"| {backend} | {'yes' if baseline else 'no'} | {peak:.0f} | "
                  f"{float(minutes.split(':')[-1]) * 60 + float(seconds):.0f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cli", action="store_true", help="measure the keras-dynhp train command instead")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.epochs)
        return
    if args.cli:
        _cli_peaks(args.backends, args.epochs)
        return
    for backend in args.backends:  # one after the other: never two measurements at once
        done = subprocess.run([sys.executable, __file__, "--worker", backend, "--epochs", str(args.epochs)],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"{backend} worker failed:\n{done.stderr[-3000:]}")
        _table(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
