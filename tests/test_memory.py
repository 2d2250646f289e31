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
