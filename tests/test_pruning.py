import numpy as np
import pytest

from keras_dynhp import pruning


def test_keep_mask_threshold_and_floor():
    np.testing.assert_array_equal(pruning.keep_mask([0.1, 0.5, 0.9], 0.5), [False, True, True])
    np.testing.assert_array_equal(pruning.keep_mask([0.1, 0.3, 0.2], 0.5, min_units=2), [False, True, True])


def test_hard_pruning_policy_round_trips_and_decides():
    policy = pruning.HardPruning(gamma=0.4, min_units=2, start_epoch=3)
    again = pruning.HardPruning.from_config(policy.get_config())
    assert again.get_config() == {"gamma": 0.4, "min_units": 2, "start_epoch": 3}
    assert not policy.prunes_after(2) and policy.prunes_after(3)
    np.testing.assert_array_equal(policy.keep([0.1, 0.2, 0.9, 0.5]), [False, False, True, True])
    np.testing.assert_array_equal(policy.keep([0.1, 0.3, 0.2]), [False, True, True])  # the floor


@pytest.mark.parametrize("kwargs, name", [
    ({"gamma": 1.5}, "gamma"), ({"gamma": -0.1}, "gamma"), ({"min_units": 0}, "min_units"),
    ({"min_units": 2.5}, "min_units"), ({"start_epoch": -1}, "start_epoch"),
])
def test_hard_pruning_rejects_bad_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        pruning.HardPruning(**kwargs)
