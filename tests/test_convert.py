import keras
import numpy as np
import pytest
from keras import ops

import keras_dynhp


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20)).astype("float32")
    return x, x[:, :4].argmax(1).astype("int64")


def _sequential(compile=True):
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(12, activation="relu"),
                              keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")], name="mine")
    if compile:
        model.compile(optimizer=keras.optimizers.Adam(5e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    return model


def test_prune_carries_weights_and_predicts_like_the_original_with_open_gates():
    base = _sequential()
    x, _ = _data()
    model = keras_dynhp.prune(base, seed=0)  # the defaults: open gates, the size penalty
    assert {(g.droprate_init, g.l0_lambda) for g in model.gated_layers} == {(0.05, 0.001)}
    assert model.penalty == "size"
    assert isinstance(model, keras_dynhp.DynHPModel) and model.name == "mine_dynhp"
    assert model.architecture() == [20, 12, 8, 4]
    for gated, dense in zip(model.gated_layers, base.layers):
        np.testing.assert_array_equal(ops.convert_to_numpy(gated.kernel), ops.convert_to_numpy(dense.kernel))
    np.testing.assert_allclose(model.predict(x, verbose=0), base.predict(x, verbose=0), atol=1e-6)
    assert model.optimizer.__class__ is keras.optimizers.Adam
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-3)
    assert model.optimizer is not base.optimizer


@pytest.mark.parametrize("mode", ["sp", "hp", "dynhp"])
def test_a_pruned_keras_model_trains_in_every_mode_and_strips_to_plain_keras(mode):
    x, y = _data(1024)
    inputs = keras.Input((20,))
    h = keras.layers.Dense(12, activation="relu")(inputs)
    outputs = keras.layers.Dense(4, activation="softmax")(h)
    base = keras.Model(inputs, outputs, name="functional")
    base.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                 metrics=["accuracy"])
    model = keras_dynhp.prune(base, l0_lambda=0.01, seed=0)
    kwargs = {"memory_budget": "128KiB"} if mode == "dynhp" else {"batch_size": 32}
    history = model.fit(x, y, epochs=4, mode=mode, verbose=0, seed=0, **kwargs)
    assert history.history["accuracy"][-1] > max(history.history["accuracy"][0], 0.4)
    compact = keras_dynhp.strip(model)
    assert all(type(layer).__module__.startswith("keras.") for layer in compact.layers)  # plain Keras only
    assert sum(isinstance(layer, keras.layers.Dense) for layer in compact.layers) == 2
    np.testing.assert_allclose(compact.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_an_uncompiled_softmax_model_gets_the_default_compile():
    model = keras_dynhp.prune(_sequential(compile=False))
    assert model.compiled and model._sparse_labels()
    headless = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not compiled"):
        keras_dynhp.prune(headless)
    assert not keras_dynhp.prune(headless, compile=False).compiled


@pytest.mark.parametrize("build, message", [
    (lambda: keras.Sequential([keras.layers.Dense(3)]), "Build the model"),
    (lambda: keras.Sequential([keras.Input((4, 4)), keras.layers.Flatten(), keras.layers.Dense(3)]),
     "shape \\(batch, features\\)"),
    (lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.LayerNormalization(),
                               keras.layers.Dense(2)]), "LayerNormalization\\) has no gated form.*BatchNorm"),
    (lambda: keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                               keras.layers.DepthwiseConv2D(3, depth_multiplier=2), keras.layers.Flatten(),
                               keras.layers.Dense(2)]), "depth_multiplier=2"),
    (lambda: keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                               keras.layers.BatchNormalization(), keras.layers.Dense(2)]), "after a Flatten"),
    (lambda: keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                               keras.layers.SeparableConv2D(4, 3), keras.layers.Flatten(),
                               keras.layers.Dense(2)]), "SeparableConv2D\\) has no gated form"),
    (lambda: keras.Sequential([keras.Input((8, 8, 1)), keras.layers.MaxPooling2D(), keras.layers.Conv2D(2, 3),
                               keras.layers.Flatten(), keras.layers.Dense(2)]), "comes before the first"),
    (lambda: "not a model", "takes a Keras model"),
])
def test_unsupported_models_are_clear_errors(build, message):
    with pytest.raises(ValueError, match=message):
        keras_dynhp.prune(build())


def test_branches_are_refused():
    inputs = keras.Input((6,))
    a = keras.layers.Dense(4)(inputs)
    b = keras.layers.Dense(4)(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match="feeds several layers"):
        keras_dynhp.prune(keras.Model(inputs, outputs))


def test_regularizers_that_are_not_carried_warn():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(
        2, activation="softmax", kernel_regularizer="l2")])
    with pytest.warns(UserWarning, match="kernel_regularizer"):
        keras_dynhp.prune(model)


def _keras_cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((12, 12, 1)), keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(6, 3, activation="relu", padding="same"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dropout(0.2), keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(3, activation="softmax")])


def test_prune_a_keras_cnn_predicts_like_it_trains_and_strips_to_conv2d():
    base = _keras_cnn()
    base.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model = keras_dynhp.prune(base, droprate_init=0.01, seed=0)
    assert model.layer_widths() == [(1, 4), (4, 6), (24, 8), (8, 3)]
    assert not model.gated_layers[0].gate_inputs  # image channels are never gated
    rng = np.random.default_rng(0)
    x = rng.random((64, 12, 12, 1)).astype("float32")
    y = rng.integers(0, 3, 64)
    np.testing.assert_allclose(model.predict(x, verbose=0), base.predict(x, verbose=0), atol=1e-5)
    model.fit(x, y, epochs=2, batch_size=16, mode="hp", verbose=0)
    compact = keras_dynhp.strip(model)
    kinds = [type(layer).__name__ for layer in compact.layers]
    assert kinds[:6] == ["InputLayer", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten"]
    assert kinds[-2:] == ["Dense", "Dense"]
    np.testing.assert_allclose(compact.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
