import keras
import numpy as np
import pytest
from keras import ops

import keras_dynhp
from keras_dynhp import budget as budgets
from keras_dynhp.budget import ModelBudget
from keras_dynhp.layers import LOG_ALPHA_RANGE


def _model(seed=0, **kw):
    kw.setdefault("penalty", "size")
    return keras_dynhp.build_mlp([24, 16], input_dim=20, num_classes=4, seed=seed, learning_rate=1e-2, **kw)


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20)).astype("float32")
    return x, (x[:, :4].argmax(1)).astype("int64")  # learnable from 4 of the 20 features


def test_target_schedule_is_cubic_from_start_to_budget_by_the_deadline():
    budget = ModelBudget(1000, deadline=3, start_bytes=9000)
    targets = [budget.target_bytes(e) for e in range(6)]
    want = [1000 + 8000 * (1 - (e + 1) / 4) ** 3 for e in range(3)] + [1000.0] * 3
    assert targets == pytest.approx(want)
    assert all(a >= b for a, b in zip(targets, targets[1:]))
    assert not budget.enforced_after(2) and budget.enforced_after(3) and budget.enforced_after(5)


def test_default_deadline_is_a_quarter_of_the_epochs_without_recovery():
    budget = ModelBudget("250KB")
    budget.resolve(epochs=20, start_bytes=1_000_000)
    assert budget.deadline == 4 and budget.start_bytes == 1_000_000
    assert not budget.recover and not budget.recovering(10)
    one = ModelBudget("250KB")
    one.resolve(epochs=1, start_bytes=10)
    assert one.deadline == 0


def test_budget_arguments_are_checked_and_round_trip():
    assert ModelBudget("250KB").max_bytes == 250_000
    assert ModelBudget("1KiB").max_bytes == 1024
    for kwargs, match in (({"max_bytes": "lots"}, "Cannot parse"), ({"max_bytes": 0}, "positive"),
                          ({"max_bytes": 10, "deadline": -1}, "deadline"),
                          ({"max_bytes": 10, "deadline_fraction": 0.0}, "deadline_fraction"),
                          ({"max_bytes": 10, "multiplier_lr": -1.0}, "multiplier_lr")):
        with pytest.raises(ValueError, match=match):
            ModelBudget(**kwargs)
    budget = ModelBudget(5000, deadline=4, multiplier_lr=0.2, start_bytes=9000)
    assert ModelBudget.from_config(budget.get_config()).get_config() == budget.get_config()
    assert ModelBudget.get(None) is None and ModelBudget.get(budget) is budget


def test_a_budget_below_the_smallest_network_is_an_error_before_training():
    model = _model()
    x, y = _data()
    smallest = 4 * (2 * 2 + 2 + 2 * 2 + 2 + 2 * 4 + 4)  # two units per gated layer
    with pytest.raises(ValueError, match="cannot be met") as err:
        model.fit(x, y, epochs=1, mode="hp", min_units=2, model_budget=smallest - 1, verbose=0)
    assert f"{smallest:,} bytes" in str(err.value)
    assert int(model.optimizer.iterations) == 0


@pytest.mark.parametrize("hard", [True, False])
def test_enforce_brings_the_delivered_network_within_the_budget(hard):
    model = _model()
    model(np.zeros((1, 20), "float32"))
    budget = ModelBudget(2000)
    removed = budgets.enforce(model, budget.max_bytes, min_units=1, hard=hard)
    assert removed > 0
    assert model.delivered_bytes() <= 2000
    if hard:  # physically smaller
        assert model.network_bytes() == model.delivered_bytes()
    else:  # same matrices, gates closed: the compact model is what shrinks
        assert model.count_params_stored() == 20 * 24 + 24 + 24 * 16 + 16 + 16 * 4 + 4
        closed = ops.convert_to_numpy(model.gated_layers[1].log_alpha) == np.float32(LOG_ALPHA_RANGE[0])
        assert closed.any()
    assert budgets.enforce(model, budget.max_bytes, min_units=1, hard=hard) == 0  # already fits


def test_multiplier_grows_above_the_target_and_stays_zero_below():
    x, y = _data()
    for max_bytes, grows in ((400, True), (10**7, False)):
        model = _model()
        history = model.fit(x, y, epochs=1, batch_size=32, mode="sp", model_budget=ModelBudget(
            max_bytes, deadline=5, multiplier_lr=0.05), verbose=0, seed=0)
        mu = history.history["budget_multiplier"][-1]
        assert (mu > 0) == grows, (max_bytes, mu)


@pytest.mark.parametrize("mode", ["sp", "hp", "dynhp"])
def test_fit_delivers_a_network_within_the_budget_in_every_mode(mode):
    x, y = _data()
    model = _model()
    kwargs = {"memory_budget": "64KiB", "initial_batch_size": 16} if mode == "dynhp" else {"batch_size": 32}
    budget = ModelBudget("1.2KB", deadline_fraction=0.75)  # a schedule over 3 epochs (default: 1)
    history = model.fit(x, y, epochs=4, mode=mode, model_budget=budget, verbose=0, seed=0, **kwargs)
    logs = history.history
    assert logs["delivered_bytes"][-1] <= 1200
    # every epoch ends within its scheduled target (eq. 12)
    assert all(d <= t for d, t in zip(logs["delivered_bytes"], logs["budget_target_bytes"]))
    assert logs["budget_multiplier"] == [0.0] * 4  # the multiplier is off by default
    assert logs["model_budget_bytes"][-1] == 1200
    assert len(logs["budget_multiplier"]) == 4 and logs["budget_target_bytes"][-1] == 1200
    assert logs["budget_target_bytes"][0] > logs["budget_target_bytes"][1]
    compact = keras_dynhp.strip(model)
    assert 4 * compact.count_params() <= 1200 + 4 * 0  # FeatureSelect stores no weights
    assert min(int(m.sum()) for m in keras_dynhp.penalty.delivered_masks(model.gated_layers)) >= 1
    if mode != "sp":
        assert model.network_bytes() <= 1200
    state = model.training_state
    assert state["budget_deadline"] == 2 and state["budget_start_bytes"] == 4 * (20 * 24 + 24 + 24 * 16 + 16 + 68)


def test_a_fit_without_budget_disarms_it():
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, batch_size=32, mode="sp", model_budget=400, verbose=0)
    history = model.fit(x, y, epochs=1, batch_size=32, mode="sp", verbose=0)
    assert model._budget is None and "budget_multiplier" not in history.history
    assert "delivered_bytes" in history.history and "expected_bytes" in history.history


def test_limit_pruning_puts_back_the_most_active_units_down_to_the_floor():
    model = _model()
    layers = model.gated_layers
    rates = [np.linspace(0.0, 1.0, 20), np.linspace(0.0, 1.0, 24), None]
    keep = [rates[0] >= 0.5, rates[1] >= 0.9, None]
    unlimited = keras_dynhp.penalty.chain_params(layers, [int(keep[0].sum()), int(keep[1].sum()), 16])
    floor = unlimited + 200
    limited = budgets.limit_pruning(layers, keep, rates, floor)
    counts = [int(limited[0].sum()), int(limited[1].sum()), 16]
    assert keras_dynhp.penalty.chain_params(layers, counts) >= floor
    assert limited[2] is None
    for k_new, k_old, r in zip(limited[:2], keep[:2], rates[:2]):
        assert (k_new | k_old).sum() == k_new.sum()  # only puts units back
        back = k_new & ~k_old
        if back.any():  # the ones put back are the most active of those removed
            assert r[back].min() >= r[~k_new].max()
    assert budgets.limit_pruning(layers, keep, rates, 0)[0].tolist() == keep[0].tolist()


def test_recovery_epochs_train_with_deterministic_gates_and_no_pruning():
    x, y = _data()
    model = _model()
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append([layer.deterministic_training for layer in model.gated_layers])

    budget = ModelBudget(2000, deadline=1, multiplier_lr=0.5, recover=True)
    history = model.fit(x, y, epochs=4, batch_size=32, mode="hp", model_budget=budget, verbose=0, seed=0,
                        callbacks=[Record()])
    assert [all(s) for s in seen] == [False, False, True, True]
    assert not any(layer.deterministic_training for layer in model.gated_layers)
    logs = history.history
    assert logs["delivered_bytes"][-1] <= 2000
    assert all(logs[f"pruned_{i}"][3] == 0 for i in range(3))  # no gate statistics in recovery
    steps = 256 // 32
    assert float(ops.convert_to_numpy(model.budget_step)) == pytest.approx(0.5 / steps)
    assert ModelBudget(10, recover=False).recovering(5) is False


def test_a_fit_that_ends_before_the_deadline_warns():
    x, y = _data()
    model = _model()
    with pytest.warns(keras_dynhp.training.PruningWarning, match="deadline is epoch 5"):
        model.fit(x, y, epochs=2, batch_size=32, mode="hp", model_budget=ModelBudget(400, deadline=4),
                  verbose=0)
