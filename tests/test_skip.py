"""Residual connections between gated layers: SkipSave / SkipAdd, tied channels kept whole (#29)."""

import keras
import numpy as np
import pytest

import keras_dynhp
from keras_dynhp import export, litert, surgery
from keras_dynhp.layers import L0Conv2D, L0Dense
from keras_dynhp.layers.skip import SkipAdd, SkipSave

L = keras.layers


def test_skip_add_adds_the_saved_tensor_through_its_shortcut_and_round_trips():
    shortcut = L.Dense(3, use_bias=False)
    add = SkipAdd("a", shortcut=[shortcut])
    add.build([(None, 3), (None, 2)])
    shortcut.set_weights([np.arange(6, dtype="float32").reshape(2, 3)])
    x, saved = np.ones((1, 3), "float32"), np.array([[1.0, 2.0]], "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(add([x, saved])), [[7.0, 10.0, 13.0]])
    copy = SkipAdd.from_config(add.get_config())
    assert copy.key == "a" and [type(s).__name__ for s in copy.shortcut] == ["Dense"]
    assert SkipSave.from_config(SkipSave("a").get_config()).key == "a"
    with pytest.raises(ValueError, match="key"):
        SkipSave("")


def test_dynhp_model_checks_its_skips():
    with pytest.raises(ValueError, match="no earlier SkipSave"):
        keras_dynhp.DynHPModel([L0Dense(4), L0Dense(4, gate_inputs=False), L0Dense(2)], input_dim=3,
                               connectors=[[], [SkipAdd("a")]])
    with pytest.raises(ValueError, match="gate_inputs=False"):
        keras_dynhp.DynHPModel([L0Dense(4), L0Dense(4), L0Dense(2)], input_dim=3,
                               connectors=[[SkipSave("a")], [SkipAdd("a")]])


def _resnet(seed=0):
    """Two stages of two basic blocks (the second stage starts with a strided 1x1 projection)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 1))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(6, 3, padding="same", use_bias=False)(inputs)))
    for stage, width in enumerate((6, 10)):
        for block in range(2):
            stride = 2 if stage and not block else 1
            y = L.ReLU()(L.BatchNormalization()(L.Conv2D(width, 3, strides=stride, padding="same")(x)))
            y = L.BatchNormalization()(L.Conv2D(width, 3, padding="same")(y))
            if stride != 1 or x.shape[-1] != width:
                x = L.BatchNormalization()(L.Conv2D(width, 1, strides=stride, use_bias=False)(x))
            x = L.ReLU()(L.Add()([x, y]))
    outputs = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(seed)
    x, y = rng.random((128, 12, 12, 1), dtype="float32"), rng.integers(0, 10, 128)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return model, x, y


@pytest.fixture(scope="module")
def resnet():
    return _resnet()


def test_prune_keeps_predictions_and_leaves_tied_channels_ungated(resnet):
    base, x, _ = resnet
    model = keras_dynhp.prune(base, seed=0)
    np.testing.assert_allclose(model.predict(x[:16], verbose=0), base.predict(x[:16], verbose=0), atol=1e-5)
    assert model.count_params_stored() == base.count_params()
    # stem; per block conv1 (reads the trunk: tied) and conv2 (reads the block's middle channels); the classifier
    assert [layer.gate_inputs for layer in model.gated_layers] == [False] + [False, True] * 4 + [False]
    projection = [c for gap in model.connectors for c in gap if isinstance(c, SkipAdd) and c.shortcut]
    assert len(projection) == 1 and projection[0].count_params() == 6 * 10 + 4 * 10
    assert model.gated_layers[6].output_fixed_params == projection[0].count_params()


def test_surgery_inside_a_block_is_exact_and_leaves_the_trunk_whole(resnet):
    base, x, y = resnet
    model = keras_dynhp.prune(base, seed=0)
    model.fit(x, y, epochs=1, batch_size=32, mode="sp", verbose=0)
    values = keras.ops.convert_to_numpy(model.gated_layers[2].log_alpha).copy()
    values[[0, 4]] = -10.0  # close two middle channels of the first block
    model.gated_layers[2].log_alpha.assign(values)
    before = model.predict(x[:16], verbose=0)
    trunk = [keras.ops.convert_to_numpy(v) for v in model.connectors[0][0].variables]
    surgery.remove_units(model, [None, None, np.isin(np.arange(6), [0, 4], invert=True)] + [None] * 7)
    assert model.units()[:3] == [1, 6, 4] and model.gated_layers[1].output_units == 4
    np.testing.assert_allclose(model.predict(x[:16], verbose=0), before, atol=1e-5)
    for new, old in zip(model.connectors[0][0].variables, trunk):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(new), old)  # the stem's BN: tied, whole
    assert model.network_bytes() == 4 * keras_dynhp.strip(model).count_params()


def test_hp_with_a_model_budget_prunes_blocks_strips_saves_and_exports(resnet, tmp_path):
    base, x, y = resnet
    model = keras_dynhp.prune(base, seed=0)
    budget = 2 * base.count_params()  # half the parameters, in bytes
    model.fit(x, y, epochs=2, batch_size=32, mode="hp", model_budget=budget, verbose=0)
    assert model.network_bytes() <= budget
    assert [model.units()[i] for i in (1, 3, 5, 7)] == [6, 6, 6, 10]  # the trunk is whole
    compact = keras_dynhp.strip(model)
    assert sum(isinstance(layer, L.Add) for layer in compact.layers) == 4
    np.testing.assert_allclose(compact.predict(x[:16], verbose=0), model.predict(x[:16], verbose=0), atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras_dynhp.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x[:16], verbose=0), model.predict(x[:16], verbose=0), atol=1e-6)
    path = export.export_tflite(model, tmp_path / "float.tflite")
    np.testing.assert_allclose(litert.predict_tflite(path, x[:16]), model.predict(x[:16], verbose=0), atol=1e-5)
    path = export.export_tflite(model, tmp_path / "int8.tflite", quantization="int8", representative_data=x)
    assert "ADD" in litert.op_names(path) and litert.non_integer_tensors(path) == []


def test_keras_mobilenet_v2_converts_and_meets_half_its_parameters():
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 1), alpha=0.35, weights=None, classes=10)
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 32, 32, 1), dtype="float32"), rng.integers(0, 10, 64)
    model = keras_dynhp.prune(base, seed=0)
    assert model.count_params_stored() == base.count_params()
    assert sum(isinstance(c, SkipAdd) for gap in model.connectors for c in gap) == 10
    assert isinstance(model.gated_layers[0], L0Conv2D) and not model.gated_layers[0].gate_inputs
    model.fit(x, y, epochs=1, batch_size=32, mode="hp", model_budget=2 * base.count_params(), verbose=0)
    assert model.network_bytes() <= 2 * base.count_params()
