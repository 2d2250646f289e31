"""Integration tests on a real Fashion-MNIST subset (6,000 train / 2,000 test images)."""

import keras
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
    # aggressive: lambda 5x-200x the paper's 0.01 on a 6k subset, gates starting at p=0.7 (the
    # last hidden layer's gates weigh only their 10 fan-out weights: they need the strongest)
    model = keras_dynhp.build_mlp([300, 100], seed=0, l0_lambda=[0.05, 0.05, 2.0],
                                  droprate_init=0.7, learning_rate=3e-3)
    h = model.fit(x, y, epochs=5, batch_size=64, mode="hp", verbose=0, validation_data=(xt, yt),
                  seed=0)  # the shuffle seed: otherwise drawn from NumPy's global state
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



def _tiny(seed=0, **kw):
    return keras_dynhp.build_mlp([12, 8], input_dim=20, num_classes=4, seed=seed, **kw)


def _xy(n=128, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 20)).astype("float32"), rng.integers(0, 4, n)


def test_divergence_stops_with_a_clear_error_and_restores_the_last_epoch():
    import keras

    x, y = _xy()
    model = _tiny()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=0)
    model.optimizer.learning_rate.assign(1e38)  # the weights overflow within a few steps
    before = [v.numpy().copy() for v in model.variables]
    before_opt = [v.numpy().copy() for v in model.optimizer.variables]
    with pytest.raises(training.DivergenceError, match=r"(at step \d+ of|during) epoch 2.*restored to the end of epoch 1"):
        model.fit(x, y, epochs=2, initial_epoch=1, batch_size=16, verbose=0, seed=0,
                  learning_rate_decay=None)
    for a, v in zip(before, model.variables):
        np.testing.assert_array_equal(a, v.numpy())
    for a, v in zip(before_opt, model.optimizer.variables):  # moments, iterations, learning rate
        np.testing.assert_array_equal(a, v.numpy())
    assert int(model.optimizer.iterations) == 8
    assert isinstance(keras.ops.convert_to_numpy(model.predict(x[:2], verbose=0)), np.ndarray)


def test_collapsing_a_layer_warns():
    x, y = _xy(256)
    model = _tiny(l0_lambda=50.0, learning_rate=0.05, droprate_init=0.8)
    with pytest.warns(training.PruningWarning, match="min_units|at once"):
        model.fit(x, y, epochs=2, batch_size=16, mode="hp", gamma=0.99, verbose=0)


class _Record(keras.callbacks.Callback):
    """Per epoch end (after EarlyStopping, which comes first): the network and its predictions."""

    def __init__(self, probe):
        super().__init__()
        self.probe, self.units, self.outputs = probe, [], []

    def on_epoch_end(self, epoch, logs=None):
        self.units.append(self.model.units())
        self.outputs.append(keras.ops.convert_to_numpy(self.model(self.probe)))


def _worst_then_best(scores):
    """A callback that logs `score` = scores[epoch] (EarlyStopping watches it)."""
    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = scores[epoch]
    return Score()


@pytest.mark.filterwarnings("ignore::keras_dynhp.training.PruningWarning")  # pruned hard on purpose
@pytest.mark.parametrize("mode", ["hp", "dynhp"])
def test_early_stopping_restores_the_best_epochs_whole_network_across_pruning(mode):
    x, y = _xy(256)
    scores = [0.1, 0.9, 0.2, 0.3, 0.4]  # epoch 2 (index 1) is the best
    record = _Record(x[:8])
    stop = keras.callbacks.EarlyStopping(monitor="score", mode="max", patience=10, restore_best_weights=True)
    model = _tiny(l0_lambda=2.0, droprate_init=0.6)
    fit = {"memory_budget": "64KiB", "alpha_bs": 0.5} if mode == "dynhp" else {"batch_size": 16}
    h = model.fit(x, y, epochs=5, mode=mode, gamma=0.8, prune_start_epoch=2, seed=0, verbose=0,
                  callbacks=[_worst_then_best(scores), stop, record], learning_rate_decay=None, **fit)
    assert record.units[1] != record.units[-1], record.units  # pruning happened after the best epoch
    assert h.restored_epoch == 1
    assert model.units() == record.units[1]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x[:8])), record.outputs[1], atol=1e-6)
    assert h.history["units_0"][-1] < model.units()[0] or h.history["units_1"][-1] < model.units()[1]
    h2 = model.fit(x, y, epochs=1, mode=mode, seed=0, verbose=0, learning_rate_decay=None, **fit)  # trains on
    assert np.isfinite(h2.history["loss"][-1])
    assert h2.restored_epoch is None


def test_early_stopping_with_a_model_budget_restores_only_networks_within_it():
    x, y = _xy(256)
    scores = [0.9, 0.1, 0.2, 0.3, 0.25]  # the first epoch scores best but is over the budget
    stop = keras.callbacks.EarlyStopping(monitor="score", mode="max", patience=10, restore_best_weights=True)
    model = _tiny()
    budget = keras_dynhp.ModelBudget(0.5 * model.network_bytes(), deadline_fraction=0.4)
    h = model.fit(x, y, epochs=5, mode="hp", batch_size=16, seed=0, verbose=0, model_budget=budget,
                  callbacks=[_worst_then_best(scores), stop], learning_rate_decay=None)
    fits = [i for i, b in enumerate(h.history["delivered_bytes"]) if b <= budget.max_bytes]
    assert fits and 0 not in fits
    assert h.restored_epoch == max(fits, key=lambda i: scores[i])
    assert model.delivered_bytes() <= budget.max_bytes
    assert stop.start_from_epoch == 0  # the user's callback is given back as it was


@pytest.mark.filterwarnings("ignore::keras_dynhp.training.PruningWarning")
def test_model_checkpoint_saves_the_best_epochs_whole_model_across_pruning(tmp_path):
    x, y = _xy(256)
    scores = [0.1, 0.9, 0.2, 0.3, 0.4]
    record = _Record(x[:8])
    path = str(tmp_path / "best.keras")
    best = keras.callbacks.ModelCheckpoint(path, monitor="score", mode="max", save_best_only=True)
    model = _tiny(l0_lambda=2.0, droprate_init=0.6)
    model.fit(x, y, epochs=5, mode="hp", batch_size=16, gamma=0.8, prune_start_epoch=2, seed=0, verbose=0,
              callbacks=[_worst_then_best(scores), best, record], learning_rate_decay=None)
    assert record.units[1] != model.units()
    loaded = keras_dynhp.load_model(path)
    assert loaded.units() == record.units[1]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x[:8])), record.outputs[1], atol=1e-6)


def test_the_best_weights_snapshot_is_counted_in_the_full_accounting():
    x, y = _xy(256)
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=10, restore_best_weights=True)
    h = _tiny().fit(x, y, epochs=2, mode="hp", batch_size=16, verbose=0, callbacks=[stop], seed=0)
    plain = _tiny().fit(x, y, epochs=2, mode="hp", batch_size=16, verbose=0, seed=0)
    held = h.history["full_bytes"][1] - plain.history["full_bytes"][1]
    assert held == stop.best_weights.nbytes > 0


def test_set_weights_from_before_pruning_puts_the_units_back():
    x, y = _xy(256)
    model = _tiny(l0_lambda=2.0, droprate_init=0.6)
    model.fit(x, y, epochs=1, batch_size=16, mode="sp", verbose=0)
    saved, units, out = model.get_weights(), model.units(), keras.ops.convert_to_numpy(model(x[:4]))
    keep = [np.arange(n) % 2 == 0 for n in units]
    keras_dynhp.surgery.remove_units(model, keep)
    assert model.units() != units
    model.set_weights(saved)
    assert model.units() == units
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x[:4])), out, atol=1e-6)
    assert len(model.optimizer.variables) and all(  # the optimizer's slots match the restored weights
        tuple(s.shape) in {tuple(v.shape) for v in model.trainable_variables} or s.ndim == 0
        for s in model.optimizer.variables)
    model.fit(x, y, epochs=1, batch_size=16, mode="hp", verbose=0)
    with pytest.raises(ValueError):
        model.set_weights(list(saved)[:-1])


def test_keras_backup_and_restore_points_to_ours(tmp_path):
    x, y = _xy()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    for mode in ("sp", "hp"):
        with pytest.raises(ValueError, match="keras_dynhp.callbacks.BackupAndRestore"):
            _tiny().fit(x, y, epochs=1, mode=mode, callbacks=[backup], verbose=0)


class _Crash(keras.callbacks.Callback):
    """Raises after epoch `at` (0-based) ended, as a killed process would stop."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("mode", ["sp", "hp", "dynhp"])
def test_backup_and_restore_resumes_an_interrupted_fit_exactly(mode, tmp_path):
    from keras_dynhp.callbacks import BackupAndRestore

    def kwargs():  # a fresh ModelBudget per fit (it keeps its schedule)
        fit = {"mode": mode, "seed": 3, "verbose": 0, "epochs": 4, "validation_split": 0.25}
        fit.update({"memory_budget": "64KiB", "alpha_bs": 0.5} if mode == "dynhp" else {"batch_size": 16})
        if mode != "sp":
            fit["model_budget"] = keras_dynhp.ModelBudget(1200, deadline_fraction=0.5)
        return fit

    x, y = _xy(256)
    straight = _tiny(l0_lambda=2.0, droprate_init=0.6)
    h = straight.fit(x, y, **kwargs())
    backup = BackupAndRestore(tmp_path / "backup")
    model = _tiny(l0_lambda=2.0, droprate_init=0.6)
    with pytest.raises(KeyboardInterrupt):  # after the backup of epoch 2 (index 1)
        model.fit(x, y, callbacks=[backup, _Crash(1)], **kwargs())
    assert (tmp_path / "backup" / "model.keras").exists()
    fresh = _tiny(l0_lambda=2.0, droprate_init=0.6)  # a new process: the model as first built
    h2 = fresh.fit(x, y, callbacks=[backup], **kwargs())
    assert len(h2.history["loss"]) == 2  # epochs 3 and 4 only
    assert fresh.architecture() == straight.architecture()
    for a, b in zip(straight.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert h2.history["memory_total_bytes"][-1] == h.history["memory_total_bytes"][-1]
    assert h2.history["batch_size"] == h.history["batch_size"][2:]
    assert not (tmp_path / "backup" / "model.keras").exists()  # the fit ended: the backup is gone
    with pytest.raises(ValueError, match="save_freq"):
        BackupAndRestore(tmp_path / "b", save_freq=10)


@pytest.mark.parametrize("mode", ["hp", "dynhp"])
def test_resumed_run_equals_an_uninterrupted_one(mode, tmp_path):
    kwargs = dict(mode=mode, seed=3, verbose=0)
    kwargs.update({"memory_budget": "64KiB", "alpha_bs": 0.5} if mode == "dynhp" else {"batch_size": 16})
    x, y = _xy(256)
    straight = _tiny(l0_lambda=2.0, droprate_init=0.6)
    h = straight.fit(x, y, epochs=3, **kwargs)
    first = _tiny(l0_lambda=2.0, droprate_init=0.6)

    class Interrupt(keras.callbacks.Callback):  # the run stops after epoch 2 of 3
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    first.fit(x, y, epochs=3, callbacks=[Interrupt()], **kwargs)
    assert first.training_state["epoch"] == 2
    first.save(tmp_path / "m.keras")
    resumed = keras_dynhp.load_model(tmp_path / "m.keras")
    h2 = resumed.fit(x, y, epochs=3, initial_epoch=2, **kwargs)
    assert resumed.architecture() == straight.architecture()
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert h2.history["memory_total_bytes"][-1] == h.history["memory_total_bytes"][-1]
    assert h2.history["batch_size"][-1] == h.history["batch_size"][-1]


@pytest.mark.parametrize("verbose", [1, 2])
def test_progress_bar_shows_loss_and_metrics_only(verbose, capsys):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 20)).astype("float32"), rng.integers(0, 4, 64)
    model = keras_dynhp.build_mlp([12, 8], input_dim=20, num_classes=4, seed=0)
    history = model.fit(x, y, epochs=2, mode="dynhp", memory_budget="64KiB", verbose=verbose,
                        validation_data=(x, y), seed=0)
    out = capsys.readouterr().out
    bar = [line for line in out.replace("\r", "\n").splitlines() if "loss:" in line]
    assert bar and all("units_" not in line and "grad_var_l1" not in line for line in bar)
    assert any("accuracy" in line and "val_loss" in line for line in bar)
    assert max(len(line) for line in bar) < 200
    assert [line for line in out.splitlines() if line.startswith("[dynhp] epoch")][-1].startswith(
        "[dynhp] epoch 2/2")
    assert "units_0" in history.history and "grad_var_l1" in history.history  # kept in History


def test_progress_bar_logs_keeps_keras_figures():
    logs = {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "units_0": 3, "budget_multiplier": 0.0,
            "delivered_bytes": 10, "grad_var_l1": 2.0}
    assert training.progress_bar_logs(logs) == {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.1}


def test_learning_rate_falls_along_a_cosine_and_is_put_back(fashion_subset):
    (x, y), _ = fashion_subset
    x, y = x[:600], y[:600]
    seen = []

    class Rate(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    model = keras_dynhp.build_mlp([16], seed=0, learning_rate=2e-3)
    # hp with a model budget: the optimizer that each surgery builds runs at the epoch's rate
    model.fit(x, y, epochs=4, mode="hp", batch_size=100, model_budget="30KB", verbose=0,
              callbacks=[Rate()])
    decay = training.LearningRateDecay(2e-3, 4)
    np.testing.assert_allclose(seen, [decay.rate(e) for e in range(4)], rtol=1e-6)
    assert seen[0] == pytest.approx(2e-3) and seen[-1] < 3e-4 < seen[1]
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(2e-3)
    # resumed (a run stopped after epoch 2 of 4): the schedule goes on from the base the state kept
    assert model.training_state["base_learning_rate"] == pytest.approx(2e-3)
    model.training_state["epoch"] = 2
    model.optimizer.learning_rate = 1e-5  # whatever the optimizer holds when the run stopped
    seen.clear()
    model.fit(x, y, epochs=4, initial_epoch=2, mode="hp", batch_size=100, verbose=0, callbacks=[Rate()])
    np.testing.assert_allclose(seen, [decay.rate(2), decay.rate(3)], rtol=1e-6)
    # None keeps the rate; a bad value is a clear error
    seen.clear()
    model.fit(x, y, epochs=2, mode="sp", batch_size=100, verbose=0, callbacks=[Rate()], learning_rate_decay=None)
    assert seen == pytest.approx([2e-3, 2e-3])
    with pytest.raises(ValueError, match="learning_rate_decay"):
        model.fit(x, y, epochs=1, mode="sp", learning_rate_decay="linear")
    # a learning-rate callback of the user's own wins over the default decay
    seen.clear()
    halve = keras.callbacks.LearningRateScheduler(lambda epoch, rate: 1e-3 / (epoch + 1))
    model.fit(x, y, epochs=3, mode="sp", batch_size=100, verbose=0, callbacks=[halve, Rate()])
    assert seen == pytest.approx([1e-3, 5e-4, 1e-3 / 3])
