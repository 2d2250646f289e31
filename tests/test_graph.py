"""Reading a Keras model as a chain with skip connections (keras_dynhp/graph.py)."""

import keras
import pytest

from keras_dynhp.graph import trace_chain

L = keras.layers


def _block(x, projection):
    """A ResNet basic block; with `projection` a strided 1x1 Conv2D + BatchNormalization shortcut."""
    stride = 2 if projection else 1
    y = L.ReLU()(L.BatchNormalization()(L.Conv2D(4, 3, strides=stride, padding="same")(x)))
    y = L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(y))
    if projection:
        x = L.BatchNormalization()(L.Conv2D(4, 1, strides=2)(x))
    return L.ReLU()(L.Add()([x, y]))


def test_identity_and_projection_shortcuts_are_found():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = _block(_block(x, projection=False), projection=True)
    outputs = L.Dense(3)(L.GlobalAveragePooling2D()(x))
    steps = trace_chain(keras.Model(inputs, outputs))
    kinds = [step[0] for step in steps]
    assert kinds.count("save") == kinds.count("add") == 2
    adds = [step for step in steps if step[0] == "add"]
    assert adds[0][2] == []  # identity
    assert [type(layer).__name__ for layer in adds[1][2]] == ["Conv2D", "BatchNormalization"]
    main = [step[1] for step in steps if step[0] == "layer"]
    assert sum(isinstance(layer, L.Conv2D) for layer in main) == 5  # stem + 2 per block; not the shortcut
    assert steps.index(("save", adds[0][1])) == 1  # right after the stem
    assert steps[-1][0] == "layer" and isinstance(steps[-1][1], L.Dense)


def test_a_sequential_model_is_its_layers():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(2)])
    assert [step[1] for step in trace_chain(model)] == model.layers


def _model(build):
    inputs = keras.Input((6,))
    return keras.Model(inputs, build(inputs))


def _input_fan_out(x):
    return L.Concatenate()([L.Dense(2)(L.Dense(3)(x)), L.Dense(2)(L.Dense(3)(x))])


def _concatenate(x):
    h = L.Dense(3)(x)
    return L.Concatenate()([h, L.Dense(2)(h)])


def _two_equal_branches(x):
    h = L.Dense(3)(x)
    return L.Add()([L.Dense(3)(h), L.Dense(3)(h)])


def _three_branches(x):
    h = L.Dense(3)(x)
    return L.Add()([h, L.Add()([h, L.Dense(3)(h)])])


def _shared_layer(x):
    dense = L.Dense(6)
    return dense(dense(x))


@pytest.mark.parametrize("build, message", [
    (_input_fan_out, "several layers"),
    (_concatenate, "do not meet in one Add"),
    (_two_equal_branches, "equally long"),
    (_three_branches, "feeds 3 layers"),
    (_shared_layer, "used 2 times"),
])
def test_what_is_not_a_chain_with_skips_is_a_clear_error(build, message):
    with pytest.raises(ValueError, match=message):
        trace_chain(_model(build))
