import numpy as np
import pytest

from keras_dynhp import memory


def test_paper_figures():
    # DESIGN.md "Memory accounting": the paper's tables.
    assert memory.kib(memory.mo_bytes(266_610, 512, 784)) == pytest.approx(2609.45, abs=0.01)
    assert round(memory.paper_training_mbytes(2000 * memory.mo_bytes(266_610, 512, 784)), 3) == 5.219
    assert round(memory.paper_training_mbytes(2000 * memory.mo_bytes(266_610, 128, 784)), 3) == 2.867
    assert round(memory.paper_mbytes(memory.network_bytes(266_610)), 3) == 1.041
    assert memory.kib(memory.mo_bytes(266_610, 128, 784)) == pytest.approx(1433.45, abs=0.01)


def test_max_batch_size_is_floor_of_free_bytes():
    budget = memory.mo_bytes(1000, 40, 10) + 39  # 39 bytes short of one more example
    assert memory.max_batch_size(budget, 1000, 10) == 40
    assert memory.max_batch_size(budget + 1, 1000, 10) == 41


@pytest.mark.parametrize(
    "text, expected",
    [("1433KiB", 1433 * 1024), ("2.5MiB", int(2.5 * 2**20)), ("3MB", 3_000_000), (1000, 1000), ("12 b", 12)],
)
def test_parse_bytes(text, expected):
    assert memory.parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["abc", "12XB", "", "-5KiB", 0, -1, None, True])
def test_parse_bytes_errors(bad):
    with pytest.raises(ValueError):
        memory.parse_bytes(bad)


# ---------------------------------------------------------------- full accounting (eq. 14)

def _model(optimizer=None, **kwargs):
    import keras_dynhp

    model = keras_dynhp.build_mlp([12, 8], input_dim=20, num_classes=4, seed=0, **kwargs)
    if optimizer is not None:
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(n=512):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.random((n, 20)).astype("float32"), rng.integers(0, 4, n)


def test_full_accounting_terms_against_the_shapes_of_a_real_model():
    model = _model()  # 20-12-8-4, Adam
    shapes = [(20, 12), (12, 8), (8, 4)]
    weights = sum(i * o + o for i, o in shapes)                      # 392
    gated = sum(i for i, _ in shapes)                                 # 40 gates: 20 + 12 + 8
    terms = memory.full_accounting(model, batch_size=16)
    assert terms["weights"] == 4 * weights == memory.network_bytes(model.count_params_stored())
    assert terms["gates"] == 4 * (2 * gated + 3)                      # log_alpha, active counts, 3 observation counters
    assert terms["gradients"] == 4 * (weights + gated)                # one per trainable number
    assert terms["optimizer"] == 2 * terms["gradients"]               # Adam: two moments per trainable number
    assert terms["input_batch"] == memory.batch_bytes(16, 20)
    per_example = sum(3 * i + o for i, o in shapes)                   # a, z, a*z per input; h per output
    assert terms["activations"] == 4 * 16 * per_example
    with_variance = memory.full_accounting(model, 16, measures_variance=True)
    assert with_variance["activations"] - terms["activations"] == 4 * 16 * sum(i + o for i, o in shapes)
    assert terms["total"] == sum(v for k, v in terms.items() if k != "total")


def test_optimizer_slots_follow_the_optimizer_in_use():
    import keras

    plain_sgd = memory.full_accounting(_model(keras.optimizers.SGD(0.1)), 1)
    momentum = memory.full_accounting(_model(keras.optimizers.SGD(0.1, momentum=0.9)), 1)
    assert plain_sgd["optimizer"] == 0
    assert momentum["optimizer"] == momentum["gradients"]


def test_footprint_is_linear_in_the_batch_and_paper_matches_eq_10():
    model = _model()
    fixed, per_example = memory.footprint(model, "full", measures_variance=True)
    for b in (0, 1, 7, 64):
        assert memory.full_accounting(model, b, True)["total"] == fixed + b * per_example
    assert memory.footprint(model, "paper") == (memory.network_bytes(392), memory.batch_bytes(1, 20))
    with pytest.raises(ValueError, match="accounting"):
        memory.footprint(model, "rss")


def test_dynhp_with_full_accounting_stays_within_its_budget_and_shrinks_with_surgery():
    x, y = _data()
    model = _model(droprate_init=0.7)  # gates start near the threshold: surgery in the first epochs
    budget = 30 * 1024
    history = model.fit(x, y, epochs=4, mode="dynhp", memory_budget=budget, accounting="full",
                        alpha_bs=0.0, gamma=0.75, min_units=2, verbose=0, seed=0)  # alpha 0: fastest growth
    h = history.history
    assert all(full <= budget for full in h["full_bytes"])
    assert all(paper < full for paper, full in zip(h["mo_bytes"], h["full_bytes"]))
    fixed, per_example = memory.footprint(model, "full", measures_variance=True)
    assert h["next_batch_size"][-1] <= (budget - fixed) // per_example  # the cap is the full one
    assert max(h["batch_size"]) > 16  # it did grow toward the cap
    assert model.count_params_stored() < 392  # surgery happened: the optimizer slots shrank with it
    after = memory.full_accounting(model, 1)
    assert after["optimizer"] == 2 * after["gradients"] < 2 * 4 * (392 + 40)
    # The same budget counted the paper's way would allow a far larger batch.
    assert (budget - 4 * model.count_params_stored()) // (4 * 20) > h["next_batch_size"][-1]


def test_a_budget_too_small_for_the_full_accounting_is_refused_before_training():
    x, y = _data(64)
    model = _model()
    with pytest.raises(ValueError, match="full accounting"):
        model.fit(x, y, epochs=1, mode="dynhp", memory_budget="12KiB", accounting="full", verbose=0)
    model.fit(x, y, epochs=1, mode="dynhp", memory_budget="12KiB", verbose=0)  # fits the paper's way
    with pytest.raises(ValueError, match="accounting"):
        model.fit(x, y, epochs=1, mode="dynhp", memory_budget="12KiB", accounting="rss", verbose=0)


def test_the_full_accounting_is_never_silently_ignored():
    from keras_dynhp.batch_size import DynamicBatchSize

    x, y = _data(64)
    model = _model()
    with pytest.raises(ValueError, match='needs mode="dynhp"'):
        model.fit(x, y, epochs=1, mode="sp", accounting="full", verbose=0)
    with pytest.raises(ValueError, match="conflicts"):
        model.fit(x, y, epochs=1, mode="dynhp", accounting="full", verbose=0,
                  batch_policy=DynamicBatchSize(0.98, "1MiB"))
    history = model.fit(x, y, epochs=1, mode="dynhp", verbose=0,
                        batch_policy=DynamicBatchSize(0.98, "1MiB", accounting="full"), accounting="full")
    assert history.history["budget_headroom_bytes"][0] == 2**20 - history.history["full_bytes"][0]


def test_full_accounting_of_a_cnn_counts_its_maps_pooling_and_gather():
    import keras_dynhp

    model = keras_dynhp.build_lenet5(input_shape=(20, 20, 1), filters=(4, 6), dense_units=12, num_classes=5)
    terms = memory.full_accounting(model, 10)
    # Per example: conv 0 (no input gates still counts a and a*z): 2*20*20*1 + 1 + 16*16*4;
    # pool 0: 8*8*4; conv 1: 2*8*8*4 + 4 + 4*4*6; pool 1: 2*2*6; the gather after Flatten: 24;
    # dense 2: 3*24 + 12; dense 3: 3*12 + 5.
    per_example = (2 * 400 + 1 + 256 * 4) + 64 * 4 + (2 * 64 * 4 + 4 + 16 * 6) + 24 + 24 + (3 * 24 + 12) + (3 * 12 + 5)
    assert terms["activations"] == 4 * 10 * per_example
    assert terms["input_batch"] == 4 * 10 * 400
    assert terms["weights"] == 4 * model.count_params_stored()
    with_variance = memory.full_accounting(model, 10, measures_variance=True)["activations"]
    conv0 = 256 * 25 + min(25 * 4, 2 * 256 * 256)   # patches + per-example kernel gradients
    conv1 = 16 * 100 + min(100 * 6, 2 * 16 * 16)     # patches + Gram matrices
    dense = (24 + 12) + (12 + 5)
    assert with_variance - terms["activations"] == 4 * 10 * (conv0 + conv1 + dense)


def test_history_records_the_activation_memory_of_a_cnn():
    import keras_dynhp

    model = keras_dynhp.build_lenet5(input_shape=(16, 16, 1), filters=(2, 3), dense_units=4, num_classes=3)
    rng = np.random.default_rng(0)
    x, y = rng.random((24, 16, 16, 1)).astype("float32"), rng.integers(0, 3, 24)
    expected = memory.full_accounting(model, 8)["activations"]
    h = model.fit(x, y, epochs=1, batch_size=8, verbose=0).history
    assert h["activation_bytes"] == [expected]
    assert h["full_bytes"][0] > h["mo_bytes"][0] + expected - 1
