import itertools

import numpy as np
import pytest
from keras import ops

import keras_dynhp
from keras_dynhp import penalty
from keras_dynhp.layers import L0Dense, LOG_ALPHA_RANGE, gate_probability


def _chain(widths=(3, 2, 2), classes=2, seed=0, **kw):
    """Built L0Dense layers with random gate parameters: gated inputs `widths`, then `classes`."""
    rng = np.random.default_rng(seed)
    outs = list(widths[1:]) + [classes]
    layers = []
    for n_in, n_out in zip(widths, outs):
        layer = L0Dense(n_out, **kw)
        layer.build((None, n_in))
        layer.log_alpha.assign(rng.normal(0.0, 1.5, n_in).astype("float32"))
        layers.append(layer)
    return layers


def _probabilities(layers):
    return [ops.convert_to_numpy(gate_probability(layer.log_alpha)).astype("float64") for layer in layers]


def _brute_force_expected_params(layers):
    """E[params] by enumerating every on/off configuration of every gate."""
    probs = _probabilities(layers)
    flat = np.concatenate(probs)
    sizes = [len(p) for p in probs]
    classes = layers[-1].output_units
    total = 0.0
    for states in itertools.product([0, 1], repeat=len(flat)):
        states = np.asarray(states)
        weight = np.prod(np.where(states == 1, flat, 1.0 - flat))
        counts = [int(c.sum()) for c in np.split(states, np.cumsum(sizes)[:-1])] + [classes]
        params = sum(counts[i] * counts[i + 1] + counts[i + 1] for i in range(len(layers)))
        total += weight * params
    return total


def test_expected_params_matches_brute_force_enumeration():
    layers = _chain()
    got = float(ops.convert_to_numpy(penalty.expected_params(layers)))
    assert got == pytest.approx(_brute_force_expected_params(layers), rel=1e-5)


def test_expected_params_without_bias():
    layers = _chain(use_bias=False, seed=3)
    probs = _probabilities(layers)
    e = [p.sum() for p in probs] + [2]
    want = sum(e[i] * e[i + 1] for i in range(3))
    assert float(ops.convert_to_numpy(penalty.expected_params(layers))) == pytest.approx(want, rel=1e-5)


def test_size_penalty_weights_each_layer_by_its_lambda_over_n():
    layers = _chain(penalty="size")
    for layer, lam in zip(layers, (0.1, 0.2, 0.3)):
        layer.l0_lambda = lam
        layer.dataset_size = 50
    e = [p.sum() for p in _probabilities(layers)] + [2]
    want = sum(lam * (e[i] * e[i + 1] + e[i + 1]) / 50 for i, lam in enumerate((0.1, 0.2, 0.3)))
    assert float(ops.convert_to_numpy(penalty.size_penalty(layers))) == pytest.approx(want, rel=1e-5)


def test_removing_a_hidden_unit_frees_fan_in_bias_and_fan_out():
    layers = _chain(widths=(7, 5, 4), classes=3)
    full = penalty.chain_params(layers, [7, 5, 4])
    assert full == 7 * 5 + 5 + 5 * 4 + 4 + 4 * 3 + 3
    # unit of the middle group: fan-in 7 + bias 1 (layer 0's output) + fan-out 4 (layer 1's row)
    assert full - penalty.chain_params(layers, [7, 4, 4]) == 7 + 1 + 4
    # an input feature frees its row only
    assert full - penalty.chain_params(layers, [6, 5, 4]) == 5


def test_louizos_weighting_is_unchanged_and_size_leaves_the_l0_term_to_the_model():
    louizos = _chain(seed=1, l0_lambda=0.5)[0]
    p = _probabilities([louizos])[0]
    want = 0.5 * p.sum() * louizos.units
    assert float(ops.convert_to_numpy(louizos.l0_penalty())) == pytest.approx(want, rel=1e-5)
    size = _chain(seed=1, l0_lambda=0.5, penalty="size")[0]
    assert float(ops.convert_to_numpy(size.l0_penalty())) == 0.0


def test_unknown_penalty_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown `penalty`"):
        L0Dense(3, penalty="bytes")
    with pytest.raises(ValueError, match="Unknown `penalty`"):
        keras_dynhp.build_mlp([4], input_dim=5, num_classes=2, penalty="l1")


def test_model_adds_the_size_penalty_once():
    model = keras_dynhp.build_mlp([6, 4], input_dim=5, num_classes=3, penalty="size", l0_lambda=0.1, seed=0)
    assert [layer.penalty for layer in model.gated_layers] == ["size"] * 3
    model(np.ones((2, 5), "float32"), training=True)
    want = float(ops.convert_to_numpy(penalty.size_penalty(model.gated_layers)))
    assert want > 0
    assert sum(float(ops.convert_to_numpy(v)) for v in model.losses) == pytest.approx(want, rel=1e-5)
    assert model.l0_penalty() == pytest.approx(want, rel=1e-5)
    again = keras_dynhp.models.DynHPModel.from_config(model.get_config())
    assert again.penalty == "size"


def test_mixed_layer_weightings_need_an_explicit_penalty():
    a, b = L0Dense(3, penalty="size"), L0Dense(2)
    with pytest.raises(ValueError, match="mix"):
        keras_dynhp.models.DynHPModel([a, b], input_dim=4)
    model = keras_dynhp.models.DynHPModel([a, b], input_dim=4, penalty="louizos")
    assert a.penalty == b.penalty == "louizos" and model.penalty == "louizos"


def test_delivered_params_counts_units_with_a_nonzero_inference_gate():
    layers = _chain(widths=(6, 5, 4), classes=3)
    closed = [np.array([1, 0, 1, 1, 0, 1], bool), np.array([1, 1, 0, 1, 1], bool), np.ones(4, bool)]
    for layer, keep in zip(layers, closed):
        layer.log_alpha.assign(np.where(keep, 2.0, LOG_ALPHA_RANGE[0]).astype("float32"))
    masks = penalty.delivered_masks(layers)
    assert [m.tolist() for m in masks] == [k.tolist() for k in closed]
    assert penalty.delivered_params(layers) == 4 * 4 + 4 + 4 * 4 + 4 + 4 * 3 + 3


def test_select_units_fits_the_size_keeps_min_units_and_drops_low_scores_first():
    layers = _chain(widths=(8, 6, 5), classes=3)
    rng = np.random.default_rng(0)
    scores = [rng.random(n) for n in (8, 6, 5)]
    for max_params in (120, 60, 30):
        keep = penalty.select_units(layers, scores, max_params, min_units=2)
        counts = [int(k.sum()) for k in keep]
        assert penalty.chain_params(layers, counts) <= max_params
        assert min(counts) >= 2
        for k, s in zip(keep, scores):  # within a layer the removed ones are the lowest scored
            if (~k).any():
                assert s[~k].max() <= s[k].min()


def test_select_units_stays_within_the_candidates_and_reports_impossible_sizes():
    layers = _chain(widths=(4, 3, 3), classes=2)
    scores = [np.ones(4), np.ones(3), np.ones(3)]
    keep0 = [np.array([1, 1, 0, 1], bool), np.ones(3, bool), np.ones(3, bool)]
    keep = penalty.select_units(layers, scores, 10_000, keep=keep0)
    assert [k.tolist() for k in keep] == [k.tolist() for k in keep0]
    smallest = penalty.smallest_params(layers, 1)
    assert smallest == 1 + 1 + 1 + 1 + 2 + 2
    with pytest.raises(ValueError, match="Cannot bring"):
        penalty.select_units(layers, scores, smallest - 1)


def _conv_then_dense(seed=0):
    """A 2-filter convolution whose 1 x 3 map is flattened into 6 gated features of a dense layer."""
    from keras_dynhp.layers import L0Conv2D

    rng = np.random.default_rng(seed)
    conv = L0Conv2D(2, 1, gate_inputs=False)
    conv.build((None, 1, 3, 1))
    dense = L0Dense(2)
    dense.build((None, 6))
    dense.log_alpha.assign(rng.normal(0.0, 1.5, 6).astype("float32"))
    return [conv, dense], [None, np.arange(6) % 2]  # Keras flattens channels last


def test_expected_params_across_flatten_match_brute_force_enumeration():
    layers, links = _conv_then_dense()
    p = _probabilities(layers)[1]
    total = 0.0
    for states in itertools.product([0, 1], repeat=6):
        states = np.asarray(states)
        weight = np.prod(np.where(states == 1, p, 1.0 - p))
        channels = len(set(links[1][states == 1]))  # a filter is stored while any feature reads it
        total += weight * ((1 * channels + channels) + (int(states.sum()) * 2 + 2))
    got = float(ops.convert_to_numpy(penalty.expected_params(layers, links)))
    assert got == pytest.approx(total, rel=1e-5)


def test_counts_and_selection_across_flatten_drop_a_channel_with_its_last_feature():
    layers, links = _conv_then_dense(seed=1)
    keep = [np.ones(1, bool), np.array([1, 1, 0, 1, 0, 1], bool)]
    assert penalty.unit_counts(layers, keep, links) == ([1, 4], [2, 2])
    keep[1] = np.array([1, 0, 1, 0, 0, 0], bool)  # channel 1 has no feature left
    assert penalty.unit_counts(layers, keep, links) == ([1, 2], [1, 2])
    assert penalty.masks_params(layers, keep, links) == (1 + 1) + (2 * 2 + 2)
    scores = [np.ones(1), np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])]
    chosen = penalty.select_units(layers, scores, max_params=2 + 3 * 2 + 2, links=links)
    assert chosen[1].tolist() == [True, False, True, False, True, False]  # channel 1 went whole
    assert chosen[0].tolist() == [True]  # ungated image channel never selected away
    assert penalty.smallest_params(layers, 1, links) == (1 + 1) + (1 * 2 + 2)


def test_defaults_are_the_size_settings_and_louizos_alone_is_the_papers_model():
    for build in (keras_dynhp.build_mlp, keras_dynhp.build_lenet5):
        ours, paper = build(compile=False), build(penalty="louizos", compile=False)
        assert ours.penalty == "size" and paper.penalty == "louizos"
        assert {(layer.l0_lambda, layer.droprate_init) for layer in ours.gated_layers} == {(0.001, 0.2)}
        assert {(layer.l0_lambda, layer.droprate_init) for layer in paper.gated_layers} == {(0.01, 0.5)}
        given = build(penalty="louizos", l0_lambda=0.02, droprate_init=0.3, compile=False)  # given wins
        assert {(layer.l0_lambda, layer.droprate_init) for layer in given.gated_layers} == {(0.02, 0.3)}
    with pytest.raises(ValueError, match="penalty"):
        keras_dynhp.build_mlp(penalty="l1")


@pytest.mark.parametrize("build", ["mlp", "lenet5", "louizos"])
def test_numpy_bookkeeping_equals_the_backends_values(build):
    """The between-epoch figures (numpy=True, no compilation per width) are the in-graph ones."""
    model = {"mlp": lambda: keras_dynhp.build_mlp([30, 20], seed=0, weight_decay=1e-3),
             "lenet5": lambda: keras_dynhp.build_lenet5(filters=(4, 6), dense_units=12, seed=0, weight_decay=1e-3),
             "louizos": lambda: keras_dynhp.build_mlp([30, 20], seed=0, penalty="louizos",
                                                      weight_decay=1e-3)}[build]()
    model.build((None,) + model.input_shape_)
    rng = np.random.default_rng(0)
    for layer in model.gated_layers:  # spread the gates over open, closed and in between
        if layer.gate_inputs:
            layer.log_alpha.assign(rng.normal(0, 2, layer.log_alpha.shape).astype("float32"))
    for layer in model.gated_layers:
        for method in ("gate_probability", "inference_gates", "l0_penalty", "expected_active_units"):
            mine = getattr(layer, method)(numpy=True)
            assert isinstance(mine, (np.ndarray, np.floating))
            np.testing.assert_allclose(mine, ops.convert_to_numpy(getattr(layer, method)()), rtol=1e-5, atol=1e-7)
    links = model.links()
    for fn in (penalty.expected_params, penalty.size_penalty):
        np.testing.assert_allclose(fn(model.gated_layers, links, numpy=True),
                                   ops.convert_to_numpy(fn(model.gated_layers, links)), rtol=1e-5)
    assert 0 < model.expected_bytes() < model.network_bytes()
