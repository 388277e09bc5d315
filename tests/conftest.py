"""Shared fixtures for the lsutils tests.

* ``tmp_data_root``: points ``LSUTILS_DATA`` at an empty temporary folder (for tests that write data
  or trained-model caches) and clears the in-process dataset memo before and after.
* ``fashion_mnist_root`` / ``fashion_mnist_small`` (session): the real Fashion-MNIST in a temporary folder,
  offline: the raw IDX files that set-up left in the data folder (``lsutils.data_root()/FashionMNIST/raw``,
  downloaded once by ``tools/fetch_data.py`` or decompressed from Debian's package) are linked in, else
  Debian's ``dataset-fashion-mnist`` is decompressed there. The network is never used. They never skip:
  without the data they *fail* with the message that says how to get it, so a missing dataset cannot
  hide as a green run.
* ``fake_fashion_mnist_debian``: a tiny Fashion-MNIST in Debian's layout (gzipped IDX files), installed
  in place of ``/usr/share/datasets/fashion-mnist`` — exercises the offline path on any machine.
* ``cifar10_fixture``: a folder with tiny CIFAR-10 batches in the original pickle format.
* ``write_idx`` / ``write_cifar10``: the writers behind the last two, for tests that need variants.

The header of every run says where the data comes from, so skips and fallbacks are visible.
"""
from __future__ import annotations

import gzip
import os
import pathlib
import pickle

import numpy as np
import pytest
import torch

from lsutils import data as lsdata


def _local_fashion_mnist_raw() -> pathlib.Path | None:
    """``data_root()/FashionMNIST/raw`` when it holds the four raw IDX files (what set-up leaves), else None."""
    raw = lsdata.data_root() / "FashionMNIST" / "raw"
    return raw if all((raw / f).is_file() and (raw / f).stat().st_size > 0 for f in lsdata._FMNIST_FILES) else None


def pytest_report_header(config):
    debian = lsdata.DEBIAN_FASHION_MNIST_DIR
    have = all((debian / f"{f}.gz").is_file() for f in lsdata._FMNIST_FILES)
    local = _local_fashion_mnist_raw()
    return [f"lsutils data: Fashion-MNIST raw files {'found in ' + str(local) if local else 'not in the data folder'}; "
            f"Debian's {'found' if have else 'missing'} in {debian}; "
            f"{lsdata.DATA_ENV_VAR}={os.environ.get(lsdata.DATA_ENV_VAR, '(unset)')}; "
            f"network={os.environ.get('LSUTILS_NETWORK', 'on (not run under tools/netoff.sh)')}",
            f"LSUTILS_PROFILE={os.environ.get('LSUTILS_PROFILE', '(unset)')}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}"]


@pytest.fixture
def tmp_data_root(tmp_path, monkeypatch) -> pathlib.Path:
    """``LSUTILS_DATA`` → a fresh temporary folder; the dataset memo is cleared around the test."""
    root = tmp_path / "lsutils-data"
    monkeypatch.setenv(lsdata.DATA_ENV_VAR, str(root))
    lsdata._clear_cache()
    yield root
    lsdata._clear_cache()


@pytest.fixture(scope="session")
def fashion_mnist_root(tmp_path_factory) -> pathlib.Path:
    """A session folder holding the real Fashion-MNIST, offline. Fails, never skips.

    The raw IDX files in the data folder (downloaded once by set-up, ``tools/fetch_data.py``, or decompressed
    there from Debian's package by an earlier load) are symlinked into the folder; without them, loading
    with ``download=False`` decompresses Debian's ``/usr/share/datasets/fashion-mnist`` into it.
    """
    root = tmp_path_factory.mktemp("fmnist")
    local = _local_fashion_mnist_raw()
    if local is not None:
        raw = root / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for name in lsdata._FMNIST_FILES:
            (raw / name).symlink_to(local / name)
    try:
        lsdata.load_dataset("fashion_mnist", n_train=10, n_val=10, n_test=10, root=root, download=False)
    except lsdata.DatasetUnavailableError as exc:
        pytest.fail(f"the real Fashion-MNIST is needed by these tests and is missing (the tests never download;\n"
                    f"`make setup` or `python tools/fetch_data.py` downloads it once into the data folder):\n{exc}",
                    pytrace=False)
    return root


@pytest.fixture(scope="session")
def fashion_mnist_small(fashion_mnist_root) -> lsdata.ImageDataset:
    """Real Fashion-MNIST, 1,000 train / 500 val / 500 test, data seed 0."""
    return lsdata.load_dataset("fashion_mnist", n_train=1000, n_val=500, n_test=500, seed=0,
                               root=fashion_mnist_root, download=False)


def _idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format of Fashion-MNIST: magic (0, 0, 0x08 = uint8, ndim), big-endian sizes, the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


@pytest.fixture
def write_idx():
    """``write_idx(folder, n_train, n_test, seed)``: tiny random Fashion-MNIST-shaped gzipped IDX files."""
    def write(folder: pathlib.Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> pathlib.Path:
        rng = np.random.default_rng(seed)
        folder.mkdir(parents=True, exist_ok=True)
        for prefix, n in (("train", n_train), ("t10k", n_test)):
            images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            labels = (np.arange(n) % 10).astype(np.uint8)
            rng.shuffle(labels)
            for kind, arr, nd in (("images", images, 3), ("labels", labels, 1)):
                with gzip.open(folder / f"{prefix}-{kind}-idx{nd}-ubyte.gz", "wb") as f:
                    f.write(_idx_bytes(arr))
        return folder
    return write


@pytest.fixture
def fake_fashion_mnist_debian(tmp_path, monkeypatch, write_idx) -> pathlib.Path:
    """A tiny (300 train / 100 test) Fashion-MNIST in Debian's layout, used instead of the real Debian folder."""
    folder = write_idx(tmp_path / "debian-fashion-mnist")
    monkeypatch.setattr(lsdata, "DEBIAN_FASHION_MNIST_DIR", folder)
    lsdata._clear_cache()
    yield folder
    lsdata._clear_cache()


@pytest.fixture
def write_cifar10():
    """``write_cifar10(root, per_batch, n_test, seed)``: tiny CIFAR-10 in its own format under ``root/cifar-10-batches-py``.

    Same layout and pickled dicts as the archive from the authors (``data``: uint8 ``(N, 3072)``,
    rows of 1024 red, 1024 green, 1024 blue pixels; ``labels``: list of ints; ``batches.meta``:
    ``label_names``). Returns the expected ``(train_x, train_y, test_x, test_y)`` as arrays.
    """
    def write(root: pathlib.Path, per_batch: int = 20, n_test: int = 40, seed: int = 0):
        rng = np.random.default_rng(seed)
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        xs, ys = [], []
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for name in names:
            n = n_test if name == "test_batch" else per_batch
            data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.permutation(np.arange(n) % 10)]
            entry = {"batch_label": name, "labels": labels, "data": data,
                     "filenames": [f"img_{name}_{i}.png" for i in range(n)]}
            with open(folder / name, "wb") as f:
                pickle.dump(entry, f, protocol=2)
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(np.array(labels))
        meta = {"label_names": list(lsdata.CIFAR10_CLASSES), "num_cases_per_batch": per_batch, "num_vis": 3072}
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump(meta, f, protocol=2)
        return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]
    return write


@pytest.fixture
def cifar10_fixture(tmp_path, write_cifar10):
    """``(root, expected_arrays)`` for a tiny CIFAR-10 (5 × 20 train, 40 test images)."""
    root = tmp_path / "cifar-root"
    expected = write_cifar10(root)
    lsdata._clear_cache()
    yield root, expected
    lsdata._clear_cache()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for the module: on tiny tensors it is ~10x faster than OpenMP's spin-up on a busy
    2-core machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
