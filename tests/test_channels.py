"""Per-channel layers with weights between gated layers: BatchNormalization, DepthwiseConv2D (#29)."""

import keras
import numpy as np
import pytest

import keras_dynhp
from keras_dynhp import export, litert, surgery
from keras_dynhp.layers import channels


def _random_batch_norm(n=5, seed=0):
    rng = np.random.default_rng(seed)
    bn = keras.layers.BatchNormalization(name="bn")
    bn.build((None, 4, 4, n))
    bn.set_weights([rng.random(n) + 0.5, rng.normal(size=n), rng.normal(size=n), rng.random(n) + 0.1])
    return bn


def test_sliced_copy_keeps_the_kept_channels_values_and_names():
    bn = _random_batch_norm()
    copy = channels.sliced_copy(bn, [0, 2, 3])
    assert [v.name for v in copy.variables] == [v.name for v in bn.variables]
    for new, old in zip(copy.get_weights(), bn.get_weights()):
        np.testing.assert_array_equal(new, old[[0, 2, 3]])
    depthwise = keras.layers.DepthwiseConv2D(3, use_bias=True)
    depthwise.build((None, 6, 6, 4))
    depthwise.set_weights([np.arange(36, dtype="float32").reshape(3, 3, 4, 1), np.arange(4, dtype="float32")])
    copy = channels.sliced_copy(depthwise, [1, 3])
    np.testing.assert_array_equal(copy.get_weights()[0], depthwise.get_weights()[0][:, :, [1, 3]])
    np.testing.assert_array_equal(copy.get_weights()[1], [1.0, 3.0])
    assert channels.channel_params(bn) == 4 and channels.channel_params(depthwise) == 10
    assert channels.channel_params(keras.layers.ReLU()) == 0


def test_only_channel_layer_handlers_register():
    with pytest.raises(TypeError, match="ChannelLayer"):
        channels.register_channel_layer(keras.layers.LayerNormalization)(object)
    assert keras.layers.BatchNormalization in channels.registered_channel_layers()


def _mobile_chain(seed=0):
    """A MobileNet-shaped chain (stride-2 stem, BN, ReLU6, padding, depthwise, pointwise), trained one epoch."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inputs = keras.Input((16, 16, 1))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    x = L.DepthwiseConv2D(3, strides=2, use_bias=False)(L.ZeroPadding2D(((0, 1), (0, 1)))(x))
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(12, 1, use_bias=False)(x)))
    outputs = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x))
    base = keras.Model(inputs, outputs)
    base.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(seed)
    x, y = rng.random((128, 16, 16, 1), dtype="float32"), rng.integers(0, 10, 128)
    base.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return base, x, y


@pytest.fixture()
def chain():
    base, x, y = _mobile_chain()
    model = keras_dynhp.prune(base, seed=0)
    model.fit(x, y, epochs=1, batch_size=32, mode="sp", verbose=0)  # trained BN statistics, a built optimizer
    return base, model, x, y


def _close_inputs(layer, units):
    values = keras.ops.convert_to_numpy(layer.log_alpha).copy()
    values[units] = -10.0  # inference gate 0, P(z > 0) ~ 0
    layer.log_alpha.assign(values)


def test_prune_carries_the_channel_layers_and_counts_their_weights():
    base, x, _ = _mobile_chain()
    model = keras_dynhp.prune(base, seed=0)
    np.testing.assert_allclose(model.predict(x[:16], verbose=0), base.predict(x[:16], verbose=0), atol=1e-6)
    assert model.count_params_stored() == base.count_params()
    # per output channel: the stem's BN (4) + the depthwise 3x3 kernel (9) + its BN (4); the pointwise's BN
    assert [layer.output_channel_params for layer in model.gated_layers] == [17, 4, 0]
    assert [type(c).__name__ for c in model.connectors[0]] == [
        "BatchNormalization", "ReLU", "ZeroPadding2D", "DepthwiseConv2D", "BatchNormalization", "ReLU"]


def test_surgery_through_batchnorm_and_depthwise_is_exact_and_slices_the_optimizer(chain):
    _, model, x, _ = chain
    _close_inputs(model.gated_layers[1], [1, 3])  # the pointwise conv's gates decide the stem's channels
    before = model.predict(x[:16], verbose=0)
    slots = {v.path: keras.ops.convert_to_numpy(v) for v in model.optimizer.variables}
    size = model.delivered_bytes()
    kept = np.array([c for c in range(8) if c not in (1, 3)])
    report = surgery.remove_units(model, [None, np.isin(np.arange(8), kept), None])
    assert report["units_after"] == [1, 6, 12]
    np.testing.assert_allclose(model.predict(x[:16], verbose=0), before, atol=1e-5)
    widths = {c.name: [tuple(v.shape) for v in c.variables] for c in model.channel_layers(0)}
    assert all(shape[-2 if len(shape) == 4 else 0] == 6 for shapes in widths.values() for shape in shapes)
    moved = 0
    for slot in model.optimizer.variables:
        old = slots[slot.path]
        if "batch_normalization" in slot.path and old.shape == (8,):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(slot), old[kept])
            moved += 1
        elif "depthwise" in slot.path and old.ndim == 4:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(slot), old[:, :, kept])
            moved += 1
    assert moved == 2 * 4 + 2  # Adam's two moments of 2 BN x (gamma, beta) and of the depthwise kernel
    assert model.network_bytes() == size == 4 * keras_dynhp.strip(model).count_params()


def test_delivered_size_counts_channel_layers_as_strip_does(chain):
    _, model, x, _ = chain
    _close_inputs(model.gated_layers[1], [0, 5, 7])
    compact = keras_dynhp.strip(model)
    assert model.delivered_bytes() == 4 * compact.count_params() < model.network_bytes()
    np.testing.assert_allclose(compact.predict(x[:16], verbose=0), model.predict(x[:16], verbose=0), atol=1e-5)


def test_saved_after_surgery_loads_with_the_same_optimizer_state(chain, tmp_path):
    _, model, x, y = chain
    _close_inputs(model.gated_layers[1], [2])
    surgery.remove_units(model, [None, np.arange(8) != 2, None])
    model.fit(x, y, epochs=1, batch_size=32, mode="sp", verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras_dynhp.load_model(tmp_path / "m.keras")
    assert [v.path for v in loaded.trainable_variables] == [v.path for v in model.trainable_variables]
    for mine, theirs in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(theirs), keras.ops.convert_to_numpy(mine))
    np.testing.assert_allclose(loaded.predict(x[:16], verbose=0), model.predict(x[:16], verbose=0), atol=1e-6)


def test_restoring_weights_from_before_surgery_puts_the_channels_back(chain):
    _, model, x, _ = chain
    weights = model.get_weights()
    before = model.predict(x[:16], verbose=0)
    surgery.remove_units(model, [None, np.arange(8) % 2 == 0, None])
    assert model.channel_layers(0)[0].gamma.shape == (4,)
    model.set_weights(weights)
    assert model.units() == [1, 8, 12] and model.channel_layers(0)[0].gamma.shape == (8,)
    np.testing.assert_allclose(model.predict(x[:16], verbose=0), before, atol=1e-6)


def test_hp_with_a_model_budget_shrinks_the_chain_and_exports_integer_litert(chain, tmp_path):
    base, model, x, y = chain
    budget = 2 * base.count_params()  # half the parameters, in bytes
    model.fit(x, y, epochs=2, batch_size=32, mode="hp", model_budget=budget, verbose=0)
    assert model.network_bytes() <= budget
    float_path = export.export_tflite(model, tmp_path / "float.tflite")
    np.testing.assert_allclose(litert.predict_tflite(float_path, x[:16]), model.predict(x[:16], verbose=0),
                               atol=1e-5)
    int8_path = export.export_tflite(model, tmp_path / "int8.tflite", quantization="int8",
                                     representative_data=x)
    assert "DEPTHWISE_CONV_2D" in litert.op_names(int8_path)
    assert litert.non_integer_tensors(int8_path) == []


def test_layer_stack_folds_batchnorm_into_the_linear_op_before_it(chain):
    _, model, _, _ = chain
    kinds = [op[0] for op in export.layer_stack(model)["ops"]]
    assert "scale_shift" not in kinds  # every BN follows a linear convolution: folded
    assert kinds[:5] == ["conv", "activation", "pad", "depthwise", "activation"]


def test_unsupported_channel_layer_settings_are_clear_errors():
    with pytest.raises(ValueError, match="renorm"):
        keras_dynhp.DynHPModel([keras_dynhp.L0Dense(4), keras_dynhp.L0Dense(2)], input_dim=3,
                               connectors=[[keras.layers.BatchNormalization(renorm=True)]])
