"""A user's own data: .npz files and folders of images, each problem one line naming the file."""

import os

import numpy as np
import pytest

from keras_dynhp.data import ScaledArray
from keras_dynhp.experiments.user_data import DataFileError, load_file


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 6, 6)).astype(np.uint8)
    return {"x_train": x[:40], "y_train": np.arange(40) % 3, "x_test": x[40:], "y_test": np.arange(10) % 3}


def test_npz_of_uint8_images_is_served_scaled_and_floats_as_they_are(tmp_path, arrays):
    (x, y), (xt, _) = load_file(_npz(tmp_path / "d.npz", **arrays))
    assert isinstance(x, ScaledArray) and x.shape == (40, 6, 6) and y.dtype == np.int64
    np.testing.assert_array_equal(np.asarray(xt), arrays["x_test"] / np.float32(255))
    floats = dict(arrays, x_train=arrays["x_train"] * 0.5, x_test=arrays["x_test"] * 0.5)
    (x, _), _ = load_file(_npz(tmp_path / "f.npz", **floats))
    assert x.dtype == np.float32 and float(x.max()) == pytest.approx(float(floats["x_train"].max()))


@pytest.mark.parametrize("change, message", [
    ({"x_test": None}, "missing array.*x_test"),
    ({"y_train": np.arange(39)}, "y_train must hold one class id per example of x_train"),
    ({"y_train": np.arange(40) - 1}, "label -1"),
    ({"y_train": np.full(40, 0.5)}, "integer class ids"),
    ({"y_test": np.full(10, 7)}, "class 7, which y_train never has"),
    ({"x_test": np.zeros((10, 5, 5), np.uint8)}, r"x_test examples \(5, 5\)"),
    ({"x_train": np.full((40, 6, 6), np.nan)}, "NaN"),
])
def test_bad_npz_files_are_one_line_naming_the_file(tmp_path, arrays, change, message):
    given = {k: v for k, v in dict(arrays, **change).items() if v is not None}
    path = _npz(tmp_path / "bad.npz", **given)
    with pytest.raises(DataFileError, match=message) as info:
        load_file(path)
    assert str(info.value).startswith(path) and "\n" not in str(info.value)


def test_unreadable_and_missing_paths(tmp_path):
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataFileError, match="not a .npz file"):
        load_file(str(tmp_path / "text.npz"))
    with pytest.raises(DataFileError, match="no such file"):
        load_file(str(tmp_path / "nothing"))


def _images(folder, classes, per_class, size=(6, 5), mode="L"):
    from PIL import Image

    for c in classes:
        os.makedirs(folder / c, exist_ok=True)
        for i in range(per_class):
            Image.new(mode, size, color=(40 * i) % 256 if mode == "L" else (i, 2 * i, 3 * i)).save(
                folder / c / f"{i}.png")


def test_a_folder_of_class_folders_holds_out_a_seeded_fifth_per_class(tmp_path):
    _images(tmp_path / "d", ["cat", "dog"], 10)
    (x, y), (xt, yt) = load_file(str(tmp_path / "d"))
    assert x.shape == (16, 5, 6, 1) and xt.shape == (4, 5, 6, 1) and isinstance(x, ScaledArray)
    assert np.bincount(yt).tolist() == [2, 2] and np.bincount(y).tolist() == [8, 8]
    (x2, _), _ = load_file(str(tmp_path / "d"))
    np.testing.assert_array_equal(x2.values, x.values)  # seeded


def test_train_and_test_folders_and_rgb_images(tmp_path):
    _images(tmp_path / "d" / "train", ["a", "b", "c"], 3, mode="RGB")
    _images(tmp_path / "d" / "test", ["a", "c"], 2, mode="RGB")
    (x, _), (xt, yt) = load_file(str(tmp_path / "d"))
    assert x.shape == (9, 5, 6, 3) and xt.shape == (4, 5, 6, 3)
    assert yt.tolist() == [0, 0, 2, 2]  # class ids from the training folders' names


def test_bad_image_folders_name_the_file(tmp_path):
    _images(tmp_path / "d", ["a", "b"], 3)
    (tmp_path / "d" / "b" / "9.png").write_text("not an image")
    with pytest.raises(DataFileError, match=r"9\.png: unreadable image"):
        load_file(str(tmp_path / "d"))
    _images(tmp_path / "s", ["a"], 3)
    _images(tmp_path / "s", ["b"], 3, size=(7, 5))
    with pytest.raises(DataFileError, match="7x5 pixels; the others are 6x5"):
        load_file(str(tmp_path / "s"))
    _images(tmp_path / "one", ["a"], 3)
    with pytest.raises(DataFileError, match="one sub-folder of images per class"):
        load_file(str(tmp_path / "one"))
