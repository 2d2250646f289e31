"""Which units should the model budget remove after a short fine-tune? (issue #25, prune() workflows)

The model budget removes the units with the lowest gate probability P(z > 0).
After `prune()` and one epoch those are nearly equal, so this script tries a
data-aware score instead, P * mean |input| * ||outgoing weights||, computed on
1,024 training images at each removal (monkeypatched into
`keras_dynhp.penalty.select_units`), on the workflows of
`benchmarks/prune_workflows.py` (seed given, one model). Prints one JSON line:
test accuracy of the fine-tune and from-scratch workflows.

    KERAS_BACKEND=jax python benchmarks/prune_unit_scores.py gate convnet 0
    KERAS_BACKEND=jax python benchmarks/prune_unit_scores.py act convnet 0
"""

import json
import os
import sys

import keras
import numpy as np

import keras_dynhp
from keras_dynhp import penalty
from keras_dynhp.experiments.datasets import load_data

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prune_workflows as pw  # noqa: E402

MODE, NAME = sys.argv[1], sys.argv[2]  # "gate" or "act"; "convnet" or "mlp"
SEED = int(sys.argv[3]) if len(sys.argv) > 3 else 0
make, flat = pw.MODELS[NAME]
(x, y), (xt, yt) = load_data("mnist", flatten=flat)
x, y, xt, yt = x[:8000], y[:8000], xt[:2000], yt[:2000]
sample = x[:1024]
original = penalty.select_units
current = [None]


def activation_scores(model):
    probes = [np.zeros((len(sample),) + tuple(layer.preactivation_shape), "float32") for layer in model.gated_layers]
    _, gated = model(sample, training=False, probes=probes)
    scores = []
    for layer, a in zip(model.gated_layers, gated):
        a = np.abs(keras.ops.convert_to_numpy(a))
        mean_a = a.reshape(-1, a.shape[-1]).mean(0)
        k = keras.ops.convert_to_numpy(layer.kernel)
        w = np.sqrt((k ** 2).sum(axis=tuple(i for i in range(k.ndim) if i != k.ndim - 2)))
        scores.append(layer.gate_probability(numpy=True) * mean_a * w)
    return scores


if MODE == "act":
    def select(layers, scores, max_params, min_units=1, keep=None, links=None):
        return original(layers, activation_scores(current[0]), max_params, min_units, keep, links)

    penalty.select_units = select
keras.utils.set_random_seed(SEED)
plain = pw.compiled(make(SEED))
half = 4 * plain.count_params() // 2
plain.fit(x, y, epochs=2, batch_size=128, verbose=0)
pruned = keras_dynhp.prune(plain, seed=SEED)
current[0] = pruned
pruned.fit(x, y, epochs=2, batch_size=128, mode="hp", model_budget=half, verbose=0, seed=SEED)
finetune = pw.accuracy(pruned, xt, yt)
keras.utils.set_random_seed(SEED)
scratch = keras_dynhp.prune(pw.compiled(make(SEED)), seed=SEED)
current[0] = scratch
scratch.fit(x, y, epochs=3, mode="dynhp", memory_budget=4 * (plain.count_params() + 128 * 784), model_budget=half,
            verbose=0, seed=SEED)
print(json.dumps({"mode": MODE, "model": NAME, "seed": SEED, "finetune": finetune,
                  "scratch": pw.accuracy(scratch, xt, yt), "units": pruned.units()}), flush=True)
