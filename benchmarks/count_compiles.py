"""XLA compilations per epoch of a JAX DynHP run that prunes every epoch (issue #26).

A count, not a time: it does not depend on what else the machine runs, so two
versions of the code can be compared on a shared machine. DynHP on 12,000
Fashion-MNIST images (validation on 2,000 more), LeNet-300-100, a 150 KB model
budget reached at epoch 5 (so the layers shrink at every epoch end until then),
the batch growing from 16 (alpha_bs 0.98), a constant learning rate.

    KERAS_BACKEND=jax python benchmarks/count_compiles.py
    PYTHONPATH=<old checkout> KERAS_BACKEND=jax python benchmarks/count_compiles.py   # an older version
"""

import collections
import logging
import re

import jax

jax.config.update("jax_log_compiles", True)

records = []  # (function, seconds) of every XLA compilation, in order


class _Compilations(logging.Handler):
    def emit(self, record):
        found = re.search(r"Finished XLA compilation of (\S+) in ([\d.]+) sec", record.getMessage())
        if found:
            records.append((found.group(1), float(found.group(2))))


def main():
    logging.getLogger("jax").addHandler(_Compilations())
    logging.getLogger("jax").setLevel(logging.DEBUG)
    import keras

    import keras_dynhp
    from keras_dynhp.experiments.datasets import load_data

    (x, y), _ = load_data("fashion_mnist")
    x, y, xv, yv = x[:12000], y[:12000], x[-2000:], y[-2000:]
    model = keras_dynhp.build_mlp([300, 100], seed=0, penalty="size", l0_lambda=0.001, droprate_init=0.2)
    marks = []

    class Mark(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            marks.append(len(records))

    older = "learning_rate_decay" not in keras_dynhp.models.DynHPModel.fit.__code__.co_varnames
    model.fit(x, y, epochs=6, mode="dynhp", memory_budget="1433KiB", alpha_bs=0.98,
              model_budget=keras_dynhp.ModelBudget("150KB", deadline=4), validation_data=(xv, yv),
              verbose=0, seed=0, callbacks=[Mark()], **({} if older else {"learning_rate_decay": None}))
    marks.append(len(records))
    print(f"{keras_dynhp.__file__}\n| epoch | compilations | train_step | test_step | other (eager ops, staging) |")
    print("|---:|---:|---:|---:|---:|")
    for epoch in range(len(marks) - 1):
        names = collections.Counter(name for name, _ in records[marks[epoch]:marks[epoch + 1]])
        total, train, test = sum(names.values()), names["jit(train_step)"], names["jit(test_step)"]
        print(f"| {epoch + 1} | {total} | {train} | {test} | {total - train - test} |")


if __name__ == "__main__":
    main()
