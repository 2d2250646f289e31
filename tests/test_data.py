import numpy as np
import pytest
import tensorflow as tf

from keras_dynhp.data import is_batched, make_dataset


def _order(ds):
    return np.concatenate([b[1].numpy() for b in ds])


def test_batch_sizes_are_as_requested():
    x, y = np.zeros((103, 4), "float32"), np.arange(103)
    for b in (1, 16, 50, 103, 500):
        sizes = [int(batch[0].shape[0]) for batch in make_dataset(x, y, b, seed=0)]
        assert sizes == [b] * (103 // b) + ([103 % b] if 103 % b else [])
    sizes = [int(batch[0].shape[0]) for batch in make_dataset(x, y, 16, seed=0, drop_remainder=True)]
    assert sizes == [16] * 6


def test_shuffle_is_reproducible_with_a_seed_and_reshuffles_each_epoch():
    x, y = np.zeros((200, 2), "float32"), np.arange(200)
    a, b = make_dataset(x, y, 32, seed=7), make_dataset(x, y, 32, seed=7)
    first = _order(a)
    np.testing.assert_array_equal(first, _order(b))
    assert sorted(first.tolist()) == list(range(200))
    assert not np.array_equal(first, np.arange(200))
    assert not np.array_equal(first, _order(a))  # second epoch: a new order
    assert not np.array_equal(first, _order(make_dataset(x, y, 32, seed=8)))
    np.testing.assert_array_equal(_order(make_dataset(x, y, 32, shuffle=False)), np.arange(200))


def test_unbatched_dataset_is_rebatched_and_errors():
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((10, 3), "float32"), np.arange(10)))
    assert not is_batched(ds, 1) and is_batched(ds.batch(2), 1)
    assert [int(b[0].shape[0]) for b in make_dataset(ds, batch_size=4, seed=0)] == [4, 4, 2]
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(np.zeros((3, 1)), np.zeros(3), 0)
    with pytest.raises(ValueError, match="lengths"):
        make_dataset(np.zeros((3, 1)), np.zeros(4), 2)


def test_every_epoch_gets_a_fresh_order_also_when_rebuilt():
    from keras_dynhp.data import EpochPipeline

    x, y = np.arange(40, dtype="float32").reshape(40, 1), np.arange(40)

    def orders():
        pipeline = EpochPipeline(x, y, 1, rebatch=True, seed=0)
        # DynHP: the batch grows at epochs 1 and 2 (rebuilds), then stays (a second pass)
        return [np.concatenate([b[1].numpy() for b in pipeline.dataset(batch, epoch)])
                for epoch, batch in enumerate((4, 5, 6, 6))]

    first = orders()
    assert all(sorted(o.tolist()) == list(range(40)) for o in first)
    assert len({tuple(o) for o in first}) == 4, "an epoch replayed an earlier order"
    assert [o.tolist() for o in orders()] == [o.tolist() for o in first]  # seeded


def test_whole_batches_leave_out_a_different_remainder_every_epoch():
    from keras_dynhp.data import EpochPipeline

    x, y = np.arange(103, dtype="float32").reshape(103, 1), np.arange(103)
    pipeline = EpochPipeline(x, y, 1, rebatch=True, seed=0, whole_batches=True)
    assert pipeline.steps(16) == 6 and pipeline.epoch_examples(16) == 96
    seen = []
    for epoch, batch in enumerate((16, 16, 20)):
        batches = pipeline.fit_inputs(batch, epoch)["x"]
        served = [batches[i] for i in range(len(batches))]
        assert [len(b[0]) for b in served] == [batch] * (103 // batch)
        xs, ys = np.concatenate([b[0] for b in served]), np.concatenate([b[1] for b in served])
        np.testing.assert_array_equal(xs[:, 0], ys)  # rows stay paired
        sizes = [int(b[0].shape[0]) for b in pipeline.dataset(batch, epoch)]
        assert sizes == [batch] * (103 // batch)
        seen.append(set(range(103)) - set(ys.tolist()))
    assert seen[0] != seen[1], "the same examples were left out in two epochs"
    # a batch larger than the data visits all of it once; without the option nothing is left out
    assert pipeline.epoch_examples(200) == 103
    assert EpochPipeline(x, y, 1, rebatch=True, seed=0).steps(16) == 7


def test_count_examples():
    from keras_dynhp.data import count_examples

    ds = tf.data.Dataset.from_tensor_slices((np.zeros((10, 3)), np.zeros(10)))
    assert count_examples(ds, batched=False) == 10
    assert count_examples(ds.batch(4), batched=True) == 10
    assert count_examples(ds.filter(lambda a, b: True), batched=False) == 10
    with pytest.raises(ValueError, match="infinite"):
        count_examples(ds.repeat(), batched=False)
    with pytest.raises(ValueError, match="empty"):
        count_examples(ds.take(0), batched=False)



def test_training_on_arrays_on_jax_never_imports_tensorflow():
    """TensorFlow adds ~580 MiB to a JAX process: arrays (and array validation data) must not need it."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, keras_dynhp\n"
        "rng = np.random.default_rng(0)\n"
        "x, y = rng.random((256, 20)).astype('float32'), rng.integers(0, 4, 256)\n"
        "m = keras_dynhp.build_mlp([8], input_dim=20, num_classes=4, seed=0)\n"
        "h = m.fit(x, y, epochs=2, mode='sp', batch_size=32, validation_data=(x[:64], y[:64]), verbose=0)\n"
        "assert len(h.history['val_accuracy']) == 2\n"
        # gamma 0 prunes nothing: a surgery calls Keras's get_config, which imports TensorFlow itself
        "m.fit(x, y, epochs=1, mode='dynhp', memory_budget='64KiB', verbose=0, gamma=0.0)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_image_inputs_are_checked_against_their_shape():
    from keras_dynhp.data import EpochPipeline, check_element_spec, check_inputs

    images = np.zeros((4, 6, 6, 1), "float32")
    assert check_inputs(images, (6, 6, 1)).shape == (4, 6, 6, 1)
    with pytest.raises(ValueError, match=r"shape \(n, 6, 6, 1\).*reshape\(-1, 6, 6, 1\)"):
        check_inputs(images.reshape(4, 36), (6, 6, 1))
    bad = images.copy()
    bad[2, 3, 1, 0] = np.nan
    with pytest.raises(ValueError, match="first in example 2"):
        check_inputs(bad, (6, 6, 1))
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(4, "int64")))
    check_element_spec(dataset, (6, 6, 1))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 5, 5, 1\)"):
        check_element_spec(dataset, (5, 5, 1))
    pipeline = EpochPipeline(dataset, None, (6, 6, 1), rebatch=True)  # unbatched: DynHP may re-batch it
    assert pipeline.n == 4
    with pytest.raises(ValueError, match="unbatched"):
        EpochPipeline(dataset.batch(2), None, (6, 6, 1), rebatch=True)


def test_epoch_batches_gather_rows_in_order_without_copying_the_arrays():
    from keras_dynhp.data import EpochBatches, EpochPipeline

    x, y = np.arange(20, dtype="float32").reshape(10, 2), np.arange(10)
    order = np.array([3, 1, 4, 0, 9, 2, 6])
    batches = EpochBatches((x, y), order, 3)
    assert len(batches) == 3
    np.testing.assert_array_equal(batches[0][1], [3, 1, 4])
    np.testing.assert_array_equal(batches[2][1], [6])  # the last, partial batch
    np.testing.assert_array_equal(batches[1][0], x[[0, 9, 2]])
    # fit's epoch inputs hold the caller's arrays themselves, whatever the order
    pipeline = EpochPipeline(x, y, 2, seed=0)
    served = pipeline.fit_inputs(4, epoch=1)["x"]
    assert served._arrays[0] is pipeline._arrays[0] and np.shares_memory(served._arrays[0], x)
    np.testing.assert_array_equal(np.concatenate([served[i][1] for i in range(len(served))]),
                                  pipeline.order(1, 4))


def test_scaled_array_serves_float32_rows_and_stays_integer():
    from keras_dynhp.data import ScaledArray, check_inputs, take_rows

    raw = np.random.default_rng(0).integers(0, 256, (6, 4)).astype(np.uint8)
    x = ScaledArray(raw)
    assert x.shape == (6, 4) and len(x) == 6 and x.dtype == np.float32
    expected = raw.astype(np.float32) / np.float32(255.0)  # the float loader's arithmetic, bit for bit
    np.testing.assert_array_equal(x[[4, 1]], expected[[4, 1]])
    np.testing.assert_array_equal(np.asarray(x), expected)
    part = take_rows(x, slice(2, 5))
    assert isinstance(part, ScaledArray) and part.values.dtype == np.uint8 and np.shares_memory(part.values, raw)
    assert check_inputs(x, 4) is x
    with pytest.raises(ValueError, match="shape"):
        check_inputs(x, 5)
    with pytest.raises(TypeError, match="integer"):
        ScaledArray(expected)
    with pytest.raises(ValueError, match="divisor"):
        ScaledArray(raw, divisor=0)
