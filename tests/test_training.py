"""Integration tests on a real Fashion-MNIST subset (6,000 train / 2,000 test images)."""

import numpy as np
import pytest

import keras_dynhp
from keras_dynhp import memory, training
from keras_dynhp.batch_size import DynamicBatchSize, FixedBatchSize
from keras_dynhp.pruning import HardPruning


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


def test_progress_line_shows_batch_units_and_budget():
    from keras_dynhp.training import progress_line as _progress_line

    logs = {"units_0": 512, "units_1": 227, "units_2": 96, "pruned_0": 58, "pruned_1": 6,
            "pruned_2": 1, "batch_size": 18, "params": 139309, "mo_bytes": 683332,
            "budget_bytes": 1467848, "next_batch_size": 19}
    assert _progress_line(2, 30, logs, 3) == (
        "[dynhp] epoch 3/30: batch 18, units [512, 227, 96] (65 pruned), params 139,309, "
        "memory 667.3 KiB of 1433.4 KiB budget, next batch 19")


def test_long_form_policies_equal_the_short_form(fashion_subset):
    (x, y), _ = fashion_subset
    kwargs = dict(epochs=2, verbose=0, seed=0)
    runs = []
    for long_form in (False, True):
        model = keras_dynhp.build_mlp([30, 10], seed=0, l0_lambda=[0.05, 0.05, 0.5], droprate_init=0.7)
        if long_form:
            policy = DynamicBatchSize(0.9, "2MiB", 16)
            h = model.fit(x[:2000], y[:2000], mode="dynhp", pruning=HardPruning(0.5), batch_policy=policy,
                          **kwargs)
            assert policy.batch_size == h.history["next_batch_size"][-1]  # the policy keeps its state
            assert DynamicBatchSize.from_config(policy.get_config()).batch_size == policy.batch_size
        else:
            h = model.fit(x[:2000], y[:2000], mode="dynhp", gamma=0.5, alpha_bs=0.9, memory_budget="2MiB",
                          **kwargs)
        runs.append((h.history["batch_size"], h.history["params"], model.architecture()))
    assert runs[0] == runs[1]


def test_resolve_policies():
    pruning, batch = training.resolve_policies("sp", batch_size=64)
    assert pruning is None and isinstance(batch, FixedBatchSize) and batch.batch_size == 64
    pruning, batch = training.resolve_policies("hp", gamma=0.3, min_units=4)
    assert pruning.get_config() == {"gamma": 0.3, "min_units": 4, "start_epoch": 0} and batch.batch_size == 32
    pruning, batch = training.resolve_policies("dynhp", alpha_bs=0.97, memory_budget="1MiB")
    assert isinstance(batch, DynamicBatchSize) and batch.alpha_bs == 0.97
    with pytest.raises(ValueError, match="DynamicBatchSize"):
        training.resolve_policies("dynhp", batch_policy=FixedBatchSize(16))
    with pytest.raises(ValueError, match="HardPruning"):
        training.resolve_policies("hp", pruning=0.5)
    with pytest.raises(ValueError, match="gamma"):
        training.resolve_policies("hp", gamma=2.0)

