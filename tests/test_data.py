import pathlib
import pickle
from urllib.error import URLError

import numpy as np
import pytest
import torch

from lsutils import data as lsdata
from lsutils.config import get_profile
from lsutils.data import (CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN,
                          FASHION_MNIST_STD, DatasetUnavailableError, ImageDataset, Split, data_root, load_dataset,
                          load_digits_ood, load_profile_data, read_cifar_batch)


def _unnormalise(x, mean, std):
    return x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)


# ------------------------------------------------------------------ real Fashion-MNIST (Debian files)
def test_fashion_mnist_shapes_dtypes_sizes(fashion_mnist_small):
    ds = fashion_mnist_small
    assert isinstance(ds, ImageDataset) and ds.name == "fashion_mnist"
    assert ds.classes == FASHION_MNIST_CLASSES and ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1000, 500, 500)
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 28, 28) and split.x.is_contiguous()
        pixels = _unnormalise(split.x, ds.mean, ds.std)
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
        # values are k/255 exactly (up to float error): uint8 → [0, 1] → normalised
        torch.testing.assert_close(pixels * 255, (pixels * 255).round(), atol=1e-3, rtol=0)
        # stratified: every class equally represented
        assert torch.bincount(split.y, minlength=10).tolist() == [len(split) // 10] * 10
    assert "train=1000" in repr(ds) and repr(ds.train) == "Split(x=(1000, 1, 28, 28) float32, y=(1000,) int64)"


def test_fashion_mnist_normalisation_matches_training_statistics(fashion_mnist_root):
    ds = load_dataset("fashion_mnist", n_train=None, n_val=1, n_test=10, root=fashion_mnist_root, download=False)
    assert len(ds.train) == 59999
    x = torch.cat([ds.train.x, ds.val.x])
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3
    pixels = _unnormalise(x, ds.mean, ds.std)
    assert float(pixels.mean()) == pytest.approx(FASHION_MNIST_MEAN[0], abs=5e-4)
    assert float(pixels.std()) == pytest.approx(FASHION_MNIST_STD[0], abs=5e-4)


def test_fashion_mnist_split_determinism_and_disjointness(fashion_mnist_root):
    kw = dict(n_train=700, n_val=300, n_test=200, root=fashion_mnist_root, download=False)
    a0, b0, a1 = load_dataset(seed=0, **kw), load_dataset(seed=0, **kw), load_dataset(seed=1, **kw)
    assert a0 is b0  # memoised
    lsdata._clear_cache()
    c0 = load_dataset(seed=0, **kw)
    assert c0 is not a0
    torch.testing.assert_close(c0.train.x, a0.train.x, rtol=0, atol=0)
    assert torch.equal(c0.val.y, a0.val.y)
    assert not torch.equal(a1.train.x, a0.train.x)  # another seed, another split
    assert torch.equal(a1.test.x, a0.test.x)  # the test subset does not depend on the data seed

    def rows(x):
        return {bytes(r.numpy().tobytes()) for r in (x.view(len(x), -1) * 1000).round().to(torch.int32)}
    for ds in (a0, a1):
        assert not rows(ds.train.x) & rows(ds.val.x), "train and validation images must be disjoint"
    # a bigger training set with the same seed extends the smaller one (same order)
    big = load_dataset(seed=0, n_train=900, n_val=300, n_test=200, root=fashion_mnist_root, download=False)
    assert torch.equal(big.train.x[:700], a0.train.x) and torch.equal(big.val.x, a0.val.x)


def test_load_profile_data_uses_profile_sizes(fashion_mnist_root, monkeypatch):
    monkeypatch.setenv("LSUTILS_DATA", str(fashion_mnist_root))
    lsdata._clear_cache()
    p = get_profile("smoke")
    ds = load_profile_data(p)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (p.n_train, p.n_val, p.n_test)
    assert load_profile_data(p) is ds
    with pytest.raises(TypeError, match="Profile"):
        load_profile_data("smoke")


# ------------------------------------------------------------------ the offline path on a fake Debian folder
def test_debian_files_are_decompressed_for_torchvision(fake_fashion_mnist_debian, tmp_data_root):
    def no_download(root):
        raise AssertionError("must not download when Debian's files exist")
    monkey = pytest.MonkeyPatch()
    monkey.setattr(lsdata, "_download_fashion_mnist", no_download)
    try:
        ds = load_dataset("fashion_mnist", n_train=200, n_val=50, n_test=60, download=False)
    finally:
        monkey.undo()
    raw = tmp_data_root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(lsdata._FMNIST_FILES)  # no temporary files left
    assert (len(ds.train), len(ds.val), len(ds.test)) == (200, 50, 60)
    assert data_root() == tmp_data_root
    with pytest.raises(ValueError, match=r"n_train \+ n_val must be <= 300"):
        load_dataset("fashion_mnist", n_train=260, n_val=50)
    with pytest.raises(ValueError, match="n_test must be <= 100"):
        load_dataset("fashion_mnist", n_train=10, n_val=10, n_test=101)


def test_missing_fashion_mnist_names_both_fixes(tmp_path, tmp_data_root, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(lsdata, "DEBIAN_FASHION_MNIST_DIR", empty)
    calls = []

    def failing_download(root):
        calls.append(root)
        raise URLError("network is unreachable")
    monkeypatch.setattr(lsdata, "_download_fashion_mnist", failing_download)
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("fashion_mnist", n_train=10, n_val=10)
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError) and len(calls) == 1
    assert "sudo apt-get install dataset-fashion-mnist" in msg and "download" in msg
    assert "network" in msg and "LSUTILS_DATA" in msg and "URLError" in msg
    with pytest.raises(DatasetUnavailableError, match="download=False"):
        load_dataset("fashion_mnist", n_train=10, n_val=10, download=False)
    assert len(calls) == 1  # download=False never tries the network


def test_fashion_mnist_download_path_moves_files_atomically(tmp_data_root, tmp_path, monkeypatch, write_idx):
    """torchvision's download is replaced by a writer of small IDX files; everything after it is the real code."""
    import gzip

    import torchvision

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(lsdata, "DEBIAN_FASHION_MNIST_DIR", empty)
    source = write_idx(tmp_path / "mirror", n_train=120, n_test=40)

    class FashionMNIST(torchvision.datasets.FashionMNIST):  # same name: torchvision derives the folder from it
        def download(self):
            pathlib.Path(self.raw_folder).mkdir(parents=True, exist_ok=True)
            for gz in source.iterdir():
                (pathlib.Path(self.raw_folder) / gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FashionMNIST)
    ds = load_dataset("fashion_mnist", n_train=100, n_val=20, n_test=40)
    assert len(ds.train) == 100 and len(ds.test) == 40
    assert not [p for p in tmp_data_root.iterdir() if p.name.startswith(".download-")]


# ------------------------------------------------------------------ CIFAR-10 in its own format
def test_cifar10_fixture_loads_through_the_production_reader(cifar10_fixture):
    root, (train_x, train_y, test_x, test_y) = cifar10_fixture
    ds = load_dataset("cifar10", n_train=None, n_val=30, root=root, download=False)
    assert ds.classes == CIFAR10_CLASSES and ds.input_shape == (3, 32, 32)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (70, 30, 40)
    assert ds.mean == CIFAR10_MEAN and ds.std == CIFAR10_STD
    # the test set keeps the official order; pixels round-trip exactly (channel-first rows of 1024)
    pixels = (_unnormalise(ds.test.x, ds.mean, ds.std) * 255).round().to(torch.uint8)
    assert torch.equal(pixels, torch.from_numpy(test_x)) and torch.equal(ds.test.y, torch.from_numpy(test_y))
    # train ∪ val is the official training set
    got = torch.cat([ds.train.x, ds.val.x])
    got = (_unnormalise(got, ds.mean, ds.std) * 255).round().to(torch.uint8).view(100, -1)
    want = torch.from_numpy(train_x).reshape(100, -1)
    assert sorted(map(bytes, got.numpy())) == sorted(map(bytes, want.numpy()))


def test_read_cifar_batch_bytes_keys_meta_and_refuses_code(tmp_path):
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    with open(tmp_path / "py2style", "wb") as f:  # the original files were written by Python 2: byte-string keys
        pickle.dump({b"data": data, b"labels": [3, 9]}, f, protocol=2)
    batch = read_cifar_batch(tmp_path / "py2style")
    assert batch["x"].shape == (2, 3, 32, 32) and batch["x"].dtype == torch.uint8
    assert batch["x"][0, 1, 0, 0] == data[0, 1024] and batch["y"].tolist() == [3, 9]
    with open(tmp_path / "evil", "wb") as f:
        pickle.dump({"data": pathlib.Path("/")}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_cifar_batch(tmp_path / "evil")
    with open(tmp_path / "bad_labels", "wb") as f:
        pickle.dump({"data": data, "labels": [3, 10]}, f)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\]"):
        read_cifar_batch(tmp_path / "bad_labels")


def test_cifar10_download_path_and_missing_error(tmp_data_root, monkeypatch, write_cifar10):
    from torchvision.datasets import utils as tv_utils

    def failing(*args, **kwargs):
        raise URLError("no network")
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", failing)
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("cifar10", n_train=10, n_val=10)
    assert "network" in str(info.value) and "cifar-10-batches-py" in str(info.value) and "LSUTILS_DATA" in str(info.value)
    with pytest.raises(DatasetUnavailableError, match="download=False"):
        load_dataset("cifar10", n_train=10, n_val=10, download=False)

    def fake_download(url, download_root, filename=None, md5=None):  # what the real one leaves after extracting
        assert url.endswith("cifar-10-python.tar.gz") and md5
        write_cifar10(pathlib.Path(download_root), per_batch=10, n_test=20)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    ds = load_dataset("cifar10", n_train=40, n_val=10)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (40, 10, 20)
    assert torch.bincount(ds.val.y, minlength=10).tolist() == [1] * 10
    assert not [p for p in tmp_data_root.iterdir() if p.name.startswith(".download-")]


# ------------------------------------------------------------------ OOD digits, arguments, containers
def test_digits_ood_shape_and_range():
    x = load_digits_ood()
    assert x.shape == (1797, 1, 28, 28) and x.dtype == torch.float32
    pixels = x * FASHION_MNIST_STD[0] + FASHION_MNIST_MEAN[0]
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6 and pixels.max() > 0.99
    assert load_digits_ood() is x
    small = load_digits_ood(size=8, mean=0.0, std=1.0)
    from sklearn.datasets import load_digits
    torch.testing.assert_close(small[:, 0], torch.tensor(load_digits().images, dtype=torch.float32) / 16)
    with pytest.raises(ValueError, match="size must be >= 8"):
        load_digits_ood(size=4)
    with pytest.raises(ValueError, match="one channel"):
        load_digits_ood(mean=CIFAR10_MEAN, std=CIFAR10_STD)


def test_bad_arguments(tmp_data_root):
    with pytest.raises(ValueError, match=r"name must be one of \['cifar10', 'fashion_mnist'\], got 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(TypeError, match="n_train must be an int"):
        load_dataset(n_train=1.5)
    with pytest.raises(ValueError, match="n_val must be >= 0"):
        load_dataset(n_val=-1)
    with pytest.raises(TypeError, match="download"):
        load_dataset(download="yes")
    with pytest.raises(ValueError, match=r"Split needs x of shape \(N, C, H, W\)"):
        Split(torch.zeros(3, 28, 28), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class indices"):
        Split(torch.zeros(3, 1, 2, 2), torch.zeros(3))


def test_data_root_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("LSUTILS_DATA", str(tmp_path / "a" / "b"))
    assert data_root() == tmp_path / "a" / "b" and data_root().is_dir()
    monkeypatch.delenv("LSUTILS_DATA")
    repo = pathlib.Path(lsdata.__file__).resolve().parent.parent
    assert data_root() == repo / "data"
