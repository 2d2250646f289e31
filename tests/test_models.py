"""DynHPModel: structure, inputs of every kind, argument errors, the L0 penalty's N."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dynhp
from keras_dynhp.layers import L0Dense


def test_build_mlp_architecture_and_counts():
    model = keras_dynhp.build_mlp([300, 100])
    assert model.architecture() == [784, 300, 100, 10]
    assert model.count_params_stored() == 266_610 == model.network_bytes() // 4
    assert [g.consumer for g in model.pruning_groups()] == [0, 1, 2]
    assert [g.producer for g in model.pruning_groups()] == [None, 0, 1]


def test_model_takes_gated_layers_only():
    with pytest.raises(ValueError, match="gated layers"):
        keras_dynhp.DynHPModel([keras.layers.Dense(3)], input_dim=4)
    with pytest.raises(ValueError, match="at least one"):
        keras_dynhp.DynHPModel([], input_dim=4)
    model = keras_dynhp.DynHPModel([L0Dense(8, "relu"), L0Dense(3)], input_dim=5)
    assert model.count_params_stored() == 5 * 8 + 8 + 8 * 3 + 3


def _xy(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 20)).astype("float32"), rng.integers(0, 4, n)


@pytest.mark.parametrize("make", [
    lambda ds: ds.batch(16),  # batched: cardinality counts batches, not examples
    lambda ds: ds.filter(lambda a, b: True).batch(16),  # batched, unknown cardinality
])
def test_penalty_divides_by_the_true_n_for_batched_datasets(make):
    x, y = _xy()
    model = keras_dynhp.build_mlp([12, 8], input_dim=20, num_classes=4, seed=0)
    model.fit(make(tf.data.Dataset.from_tensor_slices((x, y))), epochs=1, mode="sp", verbose=0)
    assert [layer.dataset_size for layer in model.gated_layers] == [len(x)] * 3
    reference = keras_dynhp.build_mlp([12, 8], input_dim=20, num_classes=4, seed=0)
    reference.fit(x, y, epochs=1, batch_size=16, mode="sp", verbose=0, shuffle=False)
    assert model.l0_penalty() == pytest.approx(reference.l0_penalty(), rel=1e-3)


def test_penalty_n_for_unbatched_dataset_of_unknown_size_in_dynhp():
    x, y = _xy()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True)
    model = keras_dynhp.build_mlp([12, 8], input_dim=20, num_classes=4, seed=0)
    model.fit(ds, epochs=1, mode="dynhp", memory_budget="1MiB", verbose=0)
    assert [layer.dataset_size for layer in model.gated_layers] == [len(x)] * 3


def test_infinite_dataset_is_a_clear_error():
    x, y = _xy()
    model = keras_dynhp.build_mlp([12, 8], input_dim=20, num_classes=4, seed=0)
    with pytest.raises(ValueError, match="infinite"):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8), epochs=1, verbose=0)


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


# ----------------------------------------------------------- bad input: clear errors
def _small_model():
    return keras_dynhp.build_mlp([12, 8], input_dim=20, num_classes=4, seed=0)


@pytest.mark.parametrize("mutate, error, message", [
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 45, np.nan, x), y), ValueError,
     r"1 NaN or infinite values \(the first in example 2\)"),
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 3, np.inf, x), y), ValueError,
     "NaN or infinite"),
    (lambda x, y: (x, y + 0.5), ValueError, "integer class ids; example 0"),
    (lambda x, y: (x, np.where(np.arange(len(y)) == 5, 12, y)), ValueError,
     r"class ids in \[0, 4\).*example 5 has 12"),
    (lambda x, y: (x, np.where(np.arange(len(y)) == 7, -1, y)), ValueError, "example 7 has -1"),
    (lambda x, y: (x, np.eye(4)[y]), ValueError, "one-hot"),
    (lambda x, y: (x, y.astype(str)), TypeError, "integer class ids"),
    (lambda x, y: (x.astype(str), y), TypeError, "must hold numbers"),
    (lambda x, y: (x[:0], y[:0]), ValueError, "no examples"),
    (lambda x, y: (x, y[:-1]), ValueError, "different lengths"),
])
def test_bad_arrays_are_clear_errors(mutate, error, message):
    x, y = _xy(32)
    x, y = mutate(x, y)
    with pytest.raises(error, match=message):
        _small_model().fit(x, y, epochs=1, batch_size=8, verbose=0)


def test_whole_float_labels_are_accepted_and_validation_data_is_named():
    x, y = _xy(32)
    model = _small_model()
    model.fit(x, y.astype("float32"), epochs=1, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match=r"`validation_data\[0\]` must have shape \(n, 20\)"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, validation_data=(x[:, :5], y))
    with pytest.raises(ValueError, match=r"`validation_data\[1\]`.*class ids in \[0, 4\)"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, validation_data=(x, y + 4))


def test_bad_datasets_are_clear_errors():
    x, y = _xy(32)
    model = _small_model()
    with pytest.raises(ValueError, match=r"\(inputs, labels\) pairs"):
        model.fit(tf.data.Dataset.from_tensor_slices(x), epochs=1, mode="dynhp", memory_budget="1MiB",
                  verbose=0)
    with pytest.raises(ValueError, match="width 20"):
        model.fit(tf.data.Dataset.from_tensor_slices((x[:, :7], y)).batch(8), epochs=1, verbose=0)
    with pytest.raises(TypeError, match="numeric labels"):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y.astype(str))).batch(8), epochs=1, verbose=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"initial_epoch": -2}, "initial_epoch"),
    ({"initial_epoch": 5, "epochs": 2}, "past `epochs`"),
    ({"mode": "dynhp", "batch_size": 0, "memory_budget": "1MiB"}, "initial_batch_size"),
    ({"mode": "hp", "min_units": 50}, "min_units"),
    ({"mode": "dynhp", "memory_budget": "1MiB", "initial_batch_size": 500}, "larger than the 32"),
    ({"batch_size": 64}, "larger than the 32"),
    ({"mode": "dynhp", "memory_budget": float("inf")}, "finite"),
    ({"mode": "dynhp", "memory_budget": "1e400B"}, "finite"),
])
def test_bad_fit_arguments_are_clear_errors(kwargs, message):
    x, y = _xy(32)
    kwargs = {"epochs": 1, "verbose": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        _small_model().fit(x, y, **kwargs)


def test_uncompiled_model_says_compile():
    model = keras_dynhp.build_mlp([12, 8], input_dim=20, num_classes=4, compile=False)
    x, y = _xy(32)
    with pytest.raises(ValueError, match="Compile the model"):
        model.fit(x, y, epochs=1, verbose=0)


def test_bad_labels_inside_a_dataset_are_a_clear_error():
    x, y = _xy(32)
    ds = tf.data.Dataset.from_tensor_slices((x, np.where(np.arange(32) == 9, 12, y))).batch(8)
    with pytest.raises(ValueError, match=r"class ids in \[0, 4\)"):
        _small_model().fit(ds, epochs=1, verbose=0)


def test_fit_takes_keras_validation_split_and_refuses_the_rest_clearly():
    import keras_dynhp

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 5)).astype("float32"), rng.integers(0, 3, 100)
    model = keras_dynhp.build_mlp([4], input_dim=5, num_classes=3, seed=0)
    history = model.fit(x, y, epochs=1, batch_size=10, validation_split=0.2, verbose=0)
    assert "val_loss" in history.history
    assert model.gated_layers[0].dataset_size == 80  # N of the penalty: the training part only
    for kwargs, match in (({"sample_weight": np.ones(99)}, r"sample_weight.*\(100,\)"),
                          ({"sample_weight": -np.ones(100)}, "sample_weight.*>= 0"),
                          ({"class_weight": {0: 1.0}, "sample_weight": np.ones(100)}, "not both"),
                          ({"class_weight": {"a": 1.0}}, "class_weight"),
                          ({"steps_per_epoch": 3}, "steps_per_epoch"),
                          ({"validation_freq": 2}, "validation_freq"),
                          ({"validation_split": 1.5}, "validation_split")):
        with pytest.raises(ValueError, match=match):
            model.fit(x, y, epochs=1, batch_size=10, verbose=0, **kwargs)


@pytest.mark.parametrize("mode", ["sp", "dynhp"])
def test_uint8_data_as_scaled_array_trains_exactly_as_its_float_copy(mode):
    """A ScaledArray (uint8 held, float32 per batch) changes memory, not results."""
    import keras_dynhp
    from keras_dynhp.data import ScaledArray

    raw = np.random.default_rng(0).integers(0, 256, (240, 12)).astype(np.uint8)
    y = np.arange(240) % 3
    histories = []
    for x in (raw / np.float32(255.0), ScaledArray(raw)):
        model = keras_dynhp.build_mlp([6], input_dim=12, num_classes=3, seed=0)
        kwargs = {"memory_budget": "8KiB"} if mode == "dynhp" else {"batch_size": 32}
        history = model.fit(x, y, mode=mode, epochs=2, seed=0, validation_split=0.25, verbose=0, **kwargs)
        histories.append({k: v for k, v in history.history.items() if k.startswith(("loss", "val_"))})
    assert histories[0] == histories[1]
    assert set(histories[0]) >= {"loss", "val_loss", "val_accuracy"}


def test_summary_explains_stored_and_gate_parameters():
    import keras_dynhp

    model = keras_dynhp.build_mlp([300, 100])
    lines = []
    model.summary(print_fn=lambda text, **kwargs: lines.append(text))
    text = "\n".join(lines)
    assert "unbuilt" not in text
    assert "Stored weights and biases: 266,610" in text and "log_alpha (1,184)" in text
    gates = 784 + 300 + 100
    assert model.count_params() == 266_610 + 2 * gates + 3 + 3  # + observation counters, budget scalars


def test_build_lenet5_is_lenet5_caffe_and_round_trips(tmp_path):
    model = keras_dynhp.build_lenet5(seed=0)
    assert model.layer_widths() == [(1, 20), (20, 50), (800, 500), (500, 10)]
    assert model.count_params_stored() == 520 + 25_050 + 400_500 + 5_010
    assert model.example_size == 784
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    path = tmp_path / "lenet5.keras"
    model.save(path)
    loaded = keras_dynhp.load_model(path)

    def normal(config):  # tuples come back from JSON as lists
        return json.loads(json.dumps(config))

    assert normal(loaded.get_config()) == normal(model.get_config())
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_cnn_inputs_of_the_wrong_shape_are_clear_errors():
    model = keras_dynhp.build_lenet5(input_shape=(20, 20, 1), filters=(2, 3), dense_units=4)
    y = np.zeros(8, "int64")
    with pytest.raises(ValueError, match=r"shape \(n, 20, 20, 1\).*reshape\(-1, 20, 20, 1\)"):
        model.fit(np.zeros((8, 400), "float32"), y, verbose=0)
    with pytest.raises(ValueError, match="cannot sit between gated layers"):
        keras_dynhp.DynHPModel([L0Dense(3), L0Dense(2)], input_dim=4, connectors=[[keras.layers.Dense(3)]])
    with pytest.raises(ValueError, match="pool_1.*too small"):
        keras_dynhp.build_lenet5(input_shape=(14, 14, 1))
    with pytest.raises(ValueError, match="one list per gap"):
        keras_dynhp.DynHPModel([L0Dense(3), L0Dense(2)], input_dim=4, connectors=[[], []])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="brute force with tf.GradientTape")
def test_cnn_dynhp_step_measures_the_per_example_gradient_variance_of_every_layer():
    """||S||_1 of one DynHP step of a CNN (deterministic gates) against one gradient per example."""
    model = keras_dynhp.build_lenet5(input_shape=(16, 16, 1), filters=(3, 4), dense_units=6, num_classes=3,
                                     seed=0, compile=False)
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((8, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 3, 8)
    model.set_deterministic_training(True)
    weights = [v for layer in model.gated_layers for v in (layer.kernel, layer.bias)]
    loss = keras.losses.SparseCategoricalCrossentropy()
    per_example = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            li = loss(y[i:i + 1], model(x[i:i + 1], training=True))
        per_example.append(np.concatenate([g.numpy().ravel() for g in tape.gradient(li, weights)]))
    expected = np.var(np.stack(per_example), axis=0).sum()
    history = model.fit(x, y, epochs=1, mode="dynhp", memory_budget="10MiB", initial_batch_size=8, verbose=0,
                        shuffle=False)
    model.set_deterministic_training(False)
    assert history.history["grad_var_l1"][0] == pytest.approx(expected, rel=1e-3)


def test_build_lenet5_argument_errors_are_clear():
    with pytest.raises(ValueError, match="two convolutions"):
        keras_dynhp.build_lenet5(filters=(20, 50, 80))
    with pytest.raises(ValueError, match="one value per gated layer \\(4\\)"):
        keras_dynhp.build_lenet5(l0_lambda=[0.1, 0.1])
    with pytest.raises(ValueError, match="input_shape"):
        keras_dynhp.DynHPModel([L0Dense(2)], input_shape=(28, 0, 1))


@pytest.mark.parametrize("mode", ["sp", "hp", "dynhp"])
def test_class_weight_and_sample_weight_weigh_the_loss_as_in_keras(mode):
    import keras_dynhp

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(240, 5)).astype("float32"), rng.integers(0, 3, 240)
    x[:, 0] += 2.0 * (y == 0)  # class 0 is easy to learn
    fit = {"memory_budget": "64KiB"} if mode == "dynhp" else {"batch_size": 16}
    runs = {}
    for name, kwargs in (("class", {"class_weight": {0: 0.0}}),
                         ("sample", {"sample_weight": (y != 0).astype("float32")}),
                         ("plain", {})):
        model = keras_dynhp.build_mlp([8], input_dim=5, num_classes=3, seed=0)
        h = model.fit(x, y, epochs=3, mode=mode, seed=0, verbose=0, learning_rate_decay=None,
                      validation_split=0.25, **fit, **kwargs)
        runs[name] = (model, h.history)
    weighted, sample, plain = runs["class"], runs["sample"], runs["plain"]
    np.testing.assert_allclose(weighted[1]["loss"], sample[1]["loss"], rtol=1e-5)  # the same weights
    np.testing.assert_allclose(weighted[1]["val_loss"], sample[1]["val_loss"], rtol=1e-5)
    assert weighted[1]["loss"][-1] != plain[1]["loss"][-1]
    if mode == "dynhp":  # F and the variance come from the weighted loss
        assert weighted[1]["data_loss"] != plain[1]["data_loss"]
        np.testing.assert_allclose(weighted[1]["grad_var_l1"], sample[1]["grad_var_l1"], rtol=1e-4)
    # class 0 weighs nothing: the model gives it less probability than the unweighted one does
    p0 = [float(np.mean(m.predict(x[y == 0], verbose=0)[:, 0])) for m in (weighted[0], plain[0])]
    assert p0[0] < p0[1] - 0.05, p0


def test_weights_with_a_dataset_belong_in_the_dataset():
    import tensorflow as tf

    import keras_dynhp

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 5)).astype("float32"), rng.integers(0, 3, 64)
    model = keras_dynhp.build_mlp([8], input_dim=5, num_classes=3, seed=0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(ValueError, match=r"\(x, y, sample_weight\) elements"):
        model.fit(ds, epochs=1, verbose=0, sample_weight=np.ones(64))
    zero = tf.data.Dataset.from_tensor_slices((x, y, np.zeros(64, "float32"))).batch(16)
    h = model.fit(zero, epochs=1, verbose=0, learning_rate_decay=None)
    assert h.history["loss"][-1] == pytest.approx(model.l0_penalty(), rel=0.05)  # only the penalty is left
