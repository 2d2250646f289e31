"""Data parallelism: SP, HP and DynHP under `keras.distribution.DataParallel` on JAX.

The runs happen in a subprocess with four simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=4`, set before JAX starts),
whatever backend the rest of the suite uses. The data-parallel run must prune the
same units, pick the same batch sizes and reach the same weights (to float
tolerance) as a single-device run with the same global batch and seed.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

WORKER = r'''
import json, os
import numpy as np, keras
import keras_dynhp
from keras_dynhp.batch_size import DynamicBatchSize

rng = np.random.default_rng(0)
x = rng.random((2050, 20)).astype("float32")
y = (x @ rng.normal(size=(20, 4))).argmax(1)

def run(mode, n):
    model = keras_dynhp.build_mlp([16, 8], input_dim=20, num_classes=4, seed=0, droprate_init=0.7,
                                  l0_lambda=0.5)
    kw = ({"batch_policy": DynamicBatchSize(0.0, "256KiB", 16, multiple_of=4)} if mode == "dynhp"
          else {"batch_size": 32})
    h = model.fit(x[:n], y[:n], epochs=4, mode=mode, verbose=0, seed=0, gamma=0.65, min_units=2, **kw)
    return {"arch": model.architecture(), "batch": h.history["batch_size"],
            "indices": model.feature_select.indices,
            "weights": [np.asarray(v.value).tolist() for layer in model.gated_layers
                        for v in (layer.kernel, layer.bias, layer.log_alpha)]}

out = {"single": {m: run(m, 2048) for m in ("hp", "dynhp")}}
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=keras.distribution.list_devices()))
out["devices"] = len(keras.distribution.list_devices())
out["parallel"] = {m: run(m, 2048) for m in ("hp", "dynhp")}
out["uneven"] = run("dynhp", 2050)  # 2050 examples: each epoch leaves 2 out, every batch splits in 4
errors = []
for kw in ({"mode": "sp", "batch_size": 30},
           {"mode": "dynhp", "memory_budget": "256KiB", "initial_batch_size": 18}):
    try:
        keras_dynhp.build_mlp([8], input_dim=20, num_classes=4).fit(x[:64], y[:64], epochs=1, verbose=0, **kw)
        errors.append(None)
    except ValueError as e:
        errors.append(str(e))
out["errors"] = errors
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def runs():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", WORKER], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["hp", "dynhp"])
def test_data_parallel_run_equals_the_single_device_run(runs, mode):
    assert runs["devices"] == 4
    single, parallel = runs["single"][mode], runs["parallel"][mode]
    assert single["arch"][:3] != [20, 16, 8], "nothing was pruned: the test would prove little"
    assert parallel["arch"] == single["arch"] and parallel["indices"] == single["indices"]
    assert parallel["batch"] == single["batch"]
    for a, b in zip(single["weights"], parallel["weights"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)
    if mode == "dynhp":
        assert single["batch"][-1] > single["batch"][0], "the batch did not grow"


def test_dynhp_batches_split_evenly_over_the_devices(runs):
    batches = runs["uneven"]["batch"]
    assert all(b % 4 == 0 for b in batches) and batches[-1] > batches[0]


def test_batches_that_do_not_split_are_refused_with_a_clear_message(runs):
    sp, dynhp = runs["errors"]
    assert sp is not None and "multiple of 4" in sp and "batch_size" in sp
    assert dynhp is not None and "multiple of 4" in dynhp and "initial_batch_size" in dynhp
