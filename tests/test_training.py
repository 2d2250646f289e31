"""Integration tests on a real Fashion-MNIST subset (6,000 train / 2,000 test images)."""

import numpy as np
import pytest
import tensorflow as tf

import keras_dynhp
from keras_dynhp import litert, memory


def test_sp_reduces_loss_and_reaches_sane_error(fashion_subset):
    (x, y), (xt, yt) = fashion_subset
    model = keras_dynhp.build_mlp([300, 100], seed=0)
    history = model.fit(x, y, epochs=3, batch_size=100, mode="sp", verbose=0,
                        validation_data=(xt, yt))
    loss = history.history["loss"]
    assert loss[-1] < loss[0]
    error = 1 - history.history["val_accuracy"][-1]
    print(f"SP 3 epochs on 6k Fashion-MNIST: test error {100 * error:.2f}%")
    assert error < 0.25
    # SP keeps the full network: constant memory, the paper's accounting
    assert history.history["params"] == [266_610] * 3
    assert history.history["mo_bytes"][0] == memory.mo_bytes(266_610, 100, 784)
    assert history.history["memory_total_bytes"][-1] == 3 * memory.mo_bytes(266_610, 100, 784)


def test_expected_active_units_fall_when_lambda_is_raised(fashion_subset):
    (x, y), _ = fashion_subset
    active = []
    for lam in (0.0, 5.0):
        model = keras_dynhp.build_mlp([300, 100], seed=0, l0_lambda=lam)
        h = model.fit(x, y, epochs=2, batch_size=100, mode="sp", verbose=0)
        active.append([h.history[f"expected_active_{i}"][-1] for i in range(3)])
    assert all(hi < lo for lo, hi in zip(*active)), active


def test_hp_shrinks_every_layer(fashion_subset):
    (x, y), (xt, yt) = fashion_subset
    # aggressive: lambda 5x-50x the paper's 0.01 on a 6k subset, gates starting at p=0.7
    model = keras_dynhp.build_mlp([300, 100], seed=0, l0_lambda=[0.05, 0.05, 0.5],
                                  droprate_init=0.7, learning_rate=3e-3)
    h = model.fit(x, y, epochs=5, batch_size=64, mode="hp", verbose=0, validation_data=(xt, yt))
    units = np.array([h.history[f"units_{i}"] for i in range(3)])
    assert np.all(units[:, -1] < [784, 300, 100]), units
    assert np.all(np.diff(units, axis=1) <= 0)
    net = h.history["network_bytes"]
    assert net[-1] < net[0] and net[-1] == model.network_bytes()
    error = 1 - h.history["val_accuracy"][-1]
    print(f"HP 5 epochs: units {units[:, -1].tolist()}, network {net[-1]} B, test error {100 * error:.2f}%")
    assert error < 0.35


def test_dynhp_respects_budget_and_stops_at_cap(fashion_subset):
    (x, y), _ = fashion_subset
    budget = memory.mo_bytes(266_610, 40, 784)  # room for batches up to ~40 before pruning
    model = keras_dynhp.build_mlp([300, 100], seed=0)
    h = model.fit(x, y, epochs=4, mode="dynhp", alpha_bs=0.5, memory_budget=budget,
                  initial_batch_size=16, verbose=0)
    mo, sizes = h.history["mo_bytes"], h.history["batch_size"]
    assert all(m <= budget for m in mo)
    assert all(b <= a for a, b in zip(sizes[1:], sizes))  # never shrinks
    cap = memory.max_batch_size(budget, model.count_params_stored(), 784)
    assert h.history["next_batch_size"][-1] == cap  # grew fast and stopped at the cap
    for b, nb, s, f, p in zip(sizes, h.history["next_batch_size"], h.history["grad_var_l1"],
                              h.history["data_loss"], h.history["params"]):
        expected = keras_dynhp.batch_size.next_batch_size(b, s, f, 0.5, budget, p, 784)
        assert nb == expected


def test_alpha_controls_growth(fashion_subset):
    (x, y), _ = fashion_subset
    finals = []
    for alpha in (0.999, 0.99, 0.9):
        model = keras_dynhp.build_mlp([300, 100], seed=0)
        h = model.fit(x[:3000], y[:3000], epochs=2, mode="dynhp", alpha_bs=alpha,
                      memory_budget="16MiB", verbose=0, seed=0)
        finals.append(h.history["next_batch_size"][-1])
    assert finals[0] <= 16 + 2 * 2  # alpha near 1: nearly flat
    assert finals == sorted(finals), finals


def test_dynhp_with_unbatched_dataset_and_batched_error(fashion_subset):
    (x, y), _ = fashion_subset
    ds = tf.data.Dataset.from_tensor_slices((x[:1000], y[:1000]))
    model = keras_dynhp.build_mlp([30, 10], seed=0)
    h = model.fit(ds, epochs=1, mode="dynhp", alpha_bs=0.98, memory_budget="2MiB", verbose=0)
    assert h.history["batch_size"] == [16]
    # DynHP's ||S||_1 and F trackers are training figures, not evaluation metrics.
    assert sorted(model.evaluate(ds.batch(256), verbose=0, return_dict=True)) == ["accuracy", "loss"]
    with pytest.raises(ValueError, match="unbatched"):
        model.fit(ds.batch(32), epochs=1, mode="dynhp", memory_budget="2MiB", verbose=0)


def test_fit_argument_errors(fashion_subset):
    (x, y), _ = fashion_subset
    model = keras_dynhp.build_mlp([30, 10], seed=0)
    with pytest.raises(ValueError, match="mode"):
        model.fit(x, y, mode="fast")
    with pytest.raises(ValueError, match=r"\(n, 784\)"):
        model.fit(x[:, :100], y)
    with pytest.raises(ValueError, match=r"\(n, 784\)"):
        model.fit(x.reshape(-1, 28, 28), y)
    with pytest.raises(ValueError, match="memory_budget"):
        model.fit(x, y, mode="dynhp", memory_budget="1KiB")
    with pytest.raises(ValueError, match="Cannot parse"):
        model.fit(x, y, mode="dynhp", memory_budget="lots")
    with pytest.raises(ValueError, match="alpha_bs"):
        model.fit(x, y, mode="dynhp", alpha_bs=1.0, memory_budget="2MiB")
    with pytest.raises(ValueError, match="memory_budget"):
        model.fit(x, y, mode="dynhp")


def test_strip_and_tflite_match_keras(fashion_subset, tmp_path):
    from keras_dynhp import export

    (x, y), (xt, yt) = fashion_subset
    model = keras_dynhp.build_mlp([300, 100], seed=0, l0_lambda=[0.05, 0.05, 0.5],
                                  droprate_init=0.7, learning_rate=3e-3)
    with pytest.raises(ValueError, match="never trained"):
        export.strip(model)
    model.fit(x, y, epochs=3, batch_size=64, mode="hp", verbose=0)
    compact = export.strip(model)
    np.testing.assert_allclose(compact.predict(xt, verbose=0), model.predict(xt, verbose=0), atol=1e-5)
    assert compact.count_params() <= model.count_params_stored()
    path = export.export_tflite(model, tmp_path / "m.tflite")
    keras_acc = float((model.predict(xt, verbose=0).argmax(1) == yt).mean())
    assert abs(litert.evaluate_tflite(path, xt, yt, batch_size=100) - keras_acc) <= 0.001


def test_progress_line_shows_batch_units_and_budget():
    from keras_dynhp.models import _progress_line

    logs = {"units_0": 512, "units_1": 227, "units_2": 96, "pruned_0": 58, "pruned_1": 6,
            "pruned_2": 1, "batch_size": 18, "params": 139309, "mo_bytes": 683332,
            "budget_bytes": 1467848, "next_batch_size": 19}
    assert _progress_line(2, 30, logs, 3) == (
        "[dynhp] epoch 3/30: batch 18, units [512, 227, 96] (65 pruned), params 139,309, "
        "memory 667.3 KiB of 1433.4 KiB budget, next batch 19")
