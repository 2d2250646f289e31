"""Re-training strategies of a compact network on new data."""

import numpy as np
import pytest
from conftest import keras_accuracy as _keras_accuracy
from conftest import shift as _shift

from keras_dynhp import retrain


def test_retrain_strategies(compact, fashion_subset):
    (x, y), (xt, yt) = fashion_subset
    new, new_test = (_shift(x[:1500]), y[:1500]), (_shift(xt[:1000]), yt[:1000])
    original_test = (xt[1000:], yt[1000:])
    before = compact.get_weights()
    rows = retrain.compare_strategies(
        compact,
        new,
        new_test,
        original_test,
        epochs=2,
        batch_size=32,
        replay_data=(x[1500:], y[1500:]),
        replay_size=300,
        seed=0,
    )
    assert [r["strategy"] for r in rows] == ["none", "all", "last", "replay"]
    for r in rows:
        assert set(r) == {"strategy", "new_accuracy", "original_accuracy", "seconds", "trainable_params"}
    by = {r["strategy"]: r for r in rows}
    print({k: (round(v["new_accuracy"], 4), round(v["original_accuracy"], 4)) for k, v in by.items()})
    # each strategy does what it is for: every one learns the new data, fine-tuning all layers on it
    # alone forgets the original data, and the replay buffer keeps more of it
    assert by["last"]["new_accuracy"] > by["none"]["new_accuracy"] + 0.02
    assert by["all"]["original_accuracy"] < by["none"]["original_accuracy"]
    assert by["replay"]["original_accuracy"] > by["all"]["original_accuracy"] + 0.01
    assert by["none"]["original_accuracy"] == pytest.approx(_keras_accuracy(compact, *original_test))
    assert by["all"]["new_accuracy"] > by["none"]["new_accuracy"] + 0.05
    assert by["last"]["trainable_params"] == int(np.prod(before[-2].shape)) + before[-1].size
    assert by["all"]["trainable_params"] == compact.count_params()
    # the input model is untouched
    assert all(np.array_equal(a, b) for a, b in zip(before, compact.get_weights()))
    # "last" trains only the last layer
    last = retrain.retrain(compact, *new, strategy="last", epochs=1)
    after = last.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before[:-2], after[:-2]))
    assert not np.array_equal(before[-1], after[-1])


def test_retrain_errors(compact, fashion_subset):
    (x, y), _ = fashion_subset
    with pytest.raises(ValueError, match="strategy"):
        retrain.retrain(compact, x[:10], y[:10], strategy="everything")
    with pytest.raises(ValueError, match="replay_data"):
        retrain.retrain(compact, x[:10], y[:10], strategy="replay")
    with pytest.raises(ValueError, match="replay_data"):
        retrain.compare_strategies(compact, (x[:10], y[:10]), (x[:10], y[:10]), (x[:10], y[:10]))
    with pytest.raises(ValueError, match="num_trainable_last"):
        retrain.retrain(compact, x[:10], y[:10], strategy="last", num_trainable_last=0)
    with pytest.raises(ValueError, match=r"shape \(n, 784\)"):
        retrain.retrain(compact, x[:10, :5], y[:10])
