"""Datasets as tensors: Fashion-MNIST (offline), CIFAR-10, and sklearn's digits as an OOD set.

Where the files come from (see also ``data/README.md``):

* **Fashion-MNIST** (the default): Debian's ``dataset-fashion-mnist`` package puts the four
  original ``*.gz`` IDX files in ``/usr/share/datasets/fashion-mnist/``. They are decompressed
  once into ``<data_root>/FashionMNIST/raw/`` (torchvision's checksums are for other
  compressed copies, so the ``.gz`` files cannot simply be copied), where
  ``torchvision.datasets.FashionMNIST(root, download=False)`` reads them offline. Without the
  Debian files, torchvision downloads them (e.g. on Colab).
* **CIFAR-10**: ``<data_root>/cifar-10-batches-py/`` as distributed by its authors (python
  pickles ``data_batch_1`` … ``data_batch_5``, ``test_batch``, ``batches.meta``), downloaded
  with torchvision's downloader, which checks the archive's MD5. The batches are read by
  :func:`read_cifar_batch`, a restricted unpickler (numpy arrays and plain containers only),
  instead of ``torchvision.datasets.CIFAR10``, whose per-file MD5 check would also reject the
  small test fixtures written in the same format; so the code path that the tests exercise is
  the one the book uses.
* **digits** (OOD): ``sklearn.datasets.load_digits``, bundled with scikit-learn.

Every file is written atomically (temporary name, then ``os.replace``), so chapters running at
the same time never read half-written files.

Preprocessing: ``uint8`` → ``float32`` in [0, 1] → ``(x - mean) / std`` with the official
training set's statistics (constants below, checked against the data by the tests):
Fashion-MNIST mean 0.2860, std 0.3530; CIFAR-10 mean (0.4914, 0.4822, 0.4465), std (0.2470,
0.2435, 0.2616) per channel. The validation split is carved from the official training set,
stratified by class with a seeded permutation; the training set is the next ``n_train``
examples of the same order (so also class-balanced); an ``n_test`` subset is the first
``n_test`` of a stratified order with a *fixed* seed, so every data seed is scored on the same
test images.
"""
from __future__ import annotations

import functools
import gzip
import io
import os
import pathlib
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._validate import as_int, as_real, check_choice, check_tensor

__all__ = [
    "Split", "ImageDataset", "DatasetUnavailableError", "data_root", "load_dataset", "load_profile_data",
    "load_digits_ood", "read_cifar_batch", "available_datasets",
    "FASHION_MNIST_CLASSES", "CIFAR10_CLASSES", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD",
    "CIFAR10_MEAN", "CIFAR10_STD", "DEBIAN_FASHION_MNIST_DIR", "DATA_ENV_VAR",
]

DATA_ENV_VAR = "LSUTILS_DATA"
DEBIAN_FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Statistics of the official training sets (all pixels, and channels separately for CIFAR-10), in [0, 1] units.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FILES = _CIFAR_TRAIN + ("test_batch", "batches.meta")
_TEST_SUBSET_SEED = 0


class DatasetUnavailableError(RuntimeError):
    """A dataset is neither on disk nor downloadable; the message says how to get it."""


# --------------------------------------------------------------------------------------------- containers
@dataclass(repr=False)
class Split:
    """Images ``x`` ``(N, C, H, W)`` float32 (normalised) and labels ``y`` ``(N,)`` int64.

    >>> s = Split(torch.zeros(3, 1, 28, 28), torch.tensor([0, 1, 2]))
    >>> len(s), s
    (3, Split(x=(3, 1, 28, 28) float32, y=(3,) int64))
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        check_tensor("x", self.x, floating=True, allow_empty=True)
        check_tensor("y", self.y, floating=False, allow_empty=True)
        if self.x.dim() != 4 or self.y.dim() != 1 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"Split needs x of shape (N, C, H, W) and y of shape (N,), "
                             f"got x {tuple(self.x.shape)} and y {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        dt = lambda t: str(t.dtype).replace("torch.", "")  # noqa: E731
        return f"Split(x={tuple(self.x.shape)} {dt(self.x)}, y={tuple(self.y.shape)} {dt(self.y)})"


@dataclass(repr=False)
class ImageDataset:
    """A dataset as tensors: ``train``, ``val`` (carved from the official training set) and ``test`` splits.

    ``mean``/``std`` are the per-channel statistics used to normalise ``x`` (undo with
    ``x * std + mean``); ``classes`` the class names, index = label.

    >>> ds = load_dataset("fashion_mnist", n_train=100, n_val=50, n_test=50)  # doctest: +SKIP
    >>> ds.num_classes, ds.input_shape, len(ds.train)  # doctest: +SKIP
    (10, (1, 28, 28), 100)
    """

    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        """``K``, the number of classes."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, num_classes={self.num_classes}, input_shape={self.input_shape}, "
                f"train={len(self.train)}, val={len(self.val)}, test={len(self.test)})")


# --------------------------------------------------------------------------------------------- files
def data_root() -> pathlib.Path:
    """Folder for datasets and trained-model caches, created if missing.

    ``$LSUTILS_DATA`` if set, else ``data/`` in the repository that contains ``lsutils/``
    (else, for a non-editable install, ``~/.cache/lsutils``).

    >>> data_root().is_dir()
    True
    """
    env = os.environ.get(DATA_ENV_VAR, "").strip()
    if env:
        root = pathlib.Path(env).expanduser()
    else:
        repo = pathlib.Path(__file__).resolve().parent.parent
        root = repo / "data" if (repo / "pyproject.toml").is_file() else pathlib.Path.home() / ".cache" / "lsutils"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fix_message(name: str, root: pathlib.Path, reason: str) -> str:
    if name == "fashion_mnist":
        how = (f"  * offline: `sudo apt-get install dataset-fashion-mnist` (puts the files in {DEBIAN_FASHION_MNIST_DIR}), or\n"
               f"  * online: allow network access so torchvision can download Fashion-MNIST (load_dataset(..., download=True)).")
    else:
        how = (f"  * online: allow network access so torchvision can download CIFAR-10 (load_dataset(..., download=True)), or\n"
               f"  * offline: copy the extracted folder {_CIFAR_FOLDER}/ (from cifar-10-python.tar.gz) into {root}.")
    return (f"{name} is not available: {reason}.\nFixes:\n{how}\n"
            f"  * the data folder is {root}; set the environment variable {DATA_ENV_VAR} to use another one.")


def _download_fashion_mnist(root: pathlib.Path) -> None:
    """torchvision's Fashion-MNIST download (MD5-checked, several mirrors) into a private temporary
    folder, then an atomic move of the four raw IDX files into ``root/FashionMNIST/raw``."""
    import torchvision

    tmp = pathlib.Path(tempfile.mkdtemp(dir=root, prefix=".download-"))
    try:
        torchvision.datasets.FashionMNIST(str(tmp), train=True, download=True)
        dst = root / "FashionMNIST" / "raw"
        dst.mkdir(parents=True, exist_ok=True)
        for fname in _FMNIST_FILES:
            os.replace(tmp / "FashionMNIST" / "raw" / fname, dst / fname)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download_cifar10(root: pathlib.Path) -> None:
    """torchvision's CIFAR-10 download (the archive's MD5 is checked) into a private temporary
    folder, then an atomic move of the extracted ``cifar-10-batches-py`` folder into ``root``."""
    import torchvision
    from torchvision.datasets import utils as tv_utils

    cls = torchvision.datasets.CIFAR10
    tmp = pathlib.Path(tempfile.mkdtemp(dir=root, prefix=".download-"))
    try:
        tv_utils.download_and_extract_archive(cls.url, str(tmp), filename=cls.filename, md5=cls.tgz_md5)
        dst = root / _CIFAR_FOLDER
        if not all((dst / f).is_file() for f in _CIFAR_FILES):
            if dst.exists():  # an incomplete folder (e.g. an interrupted copy): replace it
                shutil.rmtree(dst)
            try:
                os.replace(tmp / _CIFAR_FOLDER, dst)
            except OSError:  # another process moved its copy in first
                if not dst.exists():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fashion_mnist_uint8(root: pathlib.Path, download: bool | None) -> tuple[torch.Tensor, ...]:
    """``(train_x (60000, 28, 28) uint8, train_y (60000,) int64, test_x, test_y)`` via torchvision, offline first."""
    import torchvision

    raw = root / "FashionMNIST" / "raw"
    if not all((raw / f).is_file() for f in _FMNIST_FILES):
        debian = DEBIAN_FASHION_MNIST_DIR
        if all((debian / f"{f}.gz").is_file() for f in _FMNIST_FILES):
            for fname in _FMNIST_FILES:
                if not (raw / fname).is_file():
                    with gzip.open(debian / f"{fname}.gz", "rb") as f:
                        _atomic_write_bytes(raw / fname, f.read())
        elif download is False:
            raise DatasetUnavailableError(_fix_message(
                "fashion_mnist", root, f"no files in {raw} or {debian}, and download=False"))
        else:
            try:
                _download_fashion_mnist(root)
            except Exception as exc:  # network errors come in many types (URLError, RuntimeError, OSError)
                raise DatasetUnavailableError(_fix_message(
                    "fashion_mnist", root,
                    f"no files in {raw} or {debian}, and torchvision's download failed ({type(exc).__name__}: {exc})"
                )) from exc
    out = []
    for train in (True, False):
        ds = torchvision.datasets.FashionMNIST(str(root), train=train, download=False)
        out += [ds.data.to(torch.uint8).contiguous(), ds.targets.to(torch.int64)]
    return tuple(out)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only (no arbitrary code, unlike ``pickle.load``)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
                module = "numpy._core." + module[len("numpy.core."):]  # numpy 2 renamed it; avoids a warning
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def read_cifar_batch(path: str | os.PathLike) -> dict[str, Any]:
    """Read one CIFAR-10 python batch (``data_batch_*``, ``test_batch`` or ``batches.meta``).

    A batch returns ``{"x": (N, 3, 32, 32) uint8 tensor, "y": (N,) int64 tensor}``; the meta
    file returns ``{"label_names": [...]}``. Only numpy arrays and plain Python values are
    unpickled; anything else raises ``pickle.UnpicklingError``.

    >>> batch = read_cifar_batch(data_root() / "cifar-10-batches-py" / "test_batch")  # doctest: +SKIP
    >>> batch["x"].shape  # doctest: +SKIP
    torch.Size([10000, 3, 32, 32])
    """
    path = pathlib.Path(path)
    with open(path, "rb") as f:
        entry = _ArrayUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    if not isinstance(entry, dict):
        raise ValueError(f"{path} is not a CIFAR batch: expected a dict, got {type(entry).__name__}")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "label_names" in entry:
        return {"label_names": [n.decode() if isinstance(n, bytes) else str(n) for n in entry["label_names"]]}
    if "data" not in entry or "labels" not in entry:
        raise ValueError(f"{path} is not a CIFAR-10 batch: keys {sorted(entry)}, expected 'data' and 'labels'")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: expected uint8 data of shape (N, 3072) and N labels, "
                         f"got data {data.dtype} {data.shape} and {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must be in [0, 9], got range [{labels.min()}, {labels.max()}]")
    return {"x": torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), "y": torch.from_numpy(labels)}


def _cifar10_uint8(root: pathlib.Path, download: bool | None) -> tuple[torch.Tensor, ...]:
    folder = root / _CIFAR_FOLDER
    missing = [f for f in _CIFAR_FILES if not (folder / f).is_file()]
    if missing:
        if download is False:
            raise DatasetUnavailableError(_fix_message("cifar10", root, f"{folder} lacks {missing}, and download=False"))
        try:
            _download_cifar10(root)
        except Exception as exc:
            raise DatasetUnavailableError(_fix_message(
                "cifar10", root, f"{folder} lacks {missing}, and torchvision's download failed "
                                 f"({type(exc).__name__}: {exc})")) from exc
        missing = [f for f in _CIFAR_FILES if not (folder / f).is_file()]
        if missing:
            raise DatasetUnavailableError(_fix_message("cifar10", root, f"after downloading, {folder} still lacks {missing}"))
    names = read_cifar_batch(folder / "batches.meta")["label_names"]
    if tuple(names) != CIFAR10_CLASSES:
        raise ValueError(f"{folder / 'batches.meta'} names classes {names}, expected {list(CIFAR10_CLASSES)}")
    train = [read_cifar_batch(folder / f) for f in _CIFAR_TRAIN]
    test = read_cifar_batch(folder / "test_batch")
    return (torch.cat([b["x"] for b in train]), torch.cat([b["y"] for b in train]), test["x"], test["y"])


_SOURCES: dict[str, tuple[Callable[[pathlib.Path, bool | None], tuple[torch.Tensor, ...]], tuple[str, ...],
                          tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": (_fashion_mnist_uint8, FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    "cifar10": (_cifar10_uint8, CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD),
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`.

    >>> available_datasets()
    ['cifar10', 'fashion_mnist']
    """
    return sorted(_SOURCES)


# --------------------------------------------------------------------------------------------- splits
def _stratified_order(y: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation of ``range(len(y))`` whose every prefix is class-balanced (to within one per class).

    Classes take turns: the order lists the first (random) example of every class, then the
    second of every class, and so on; ties within a turn are broken by the random permutation.
    """
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    ys = y[perm]
    rank = torch.empty_like(ys)
    for c in torch.unique(ys):
        mask = ys == c
        rank[mask] = torch.arange(int(mask.sum()))
    key = rank * len(y) + torch.arange(len(y))  # turn first, then the permutation's order
    return perm[torch.argsort(key)]


def _normalise(x_uint8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    if x_uint8.dim() == 3:
        x_uint8 = x_uint8.unsqueeze(1)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x_uint8.to(torch.float32) / 255.0) - m) / s


@functools.lru_cache(maxsize=4)
def _raw(name: str, root: str, download: bool | None) -> tuple[torch.Tensor, ...]:
    """The whole dataset as uint8 tensors ``(train_x, train_y, test_x, test_y)``, read once per process."""
    return _SOURCES[name][0](pathlib.Path(root), download)


def _clear_cache() -> None:
    """Forget the in-process memo (tests use it to exercise the loading paths)."""
    _raw.cache_clear()
    _dataset.cache_clear()
    _digits.cache_clear()


def load_dataset(name: str = "fashion_mnist", *, n_train: int | None = None, n_val: int = 5000,
                 n_test: int | None = None, seed: int = 0, classes: Sequence[int] | None = None,
                 root: str | os.PathLike | None = None, download: bool | None = None) -> ImageDataset:
    """Load ``"fashion_mnist"`` or ``"cifar10"`` as normalised tensors with train/val/test splits.

    ``n_val`` validation images are carved from the official training set, stratified by
    class, by a permutation seeded with ``seed``; ``train`` holds the next ``n_train`` of the
    same order (``None`` = all the rest: 55,000 / 45,000 with ``n_val=5000``); ``test`` is the
    official test set, or its first ``n_test`` images in a stratified order with a fixed seed.
    Since the order is fixed by ``seed``, a larger ``n_train`` extends a smaller one: the first 3,000
    training images of ``n_train=12000`` are the 3,000 of ``n_train=3000`` (a transfer set for distillation).
    ``classes`` (original class indices, e.g. ``(0, 1, 2, 3, 4, 5, 7, 9)``) keeps only those classes in every
    split, relabelled ``0 .. len(classes) - 1`` in the given order, before the splits are drawn (so ``n_train``
    and ``n_val`` count images of those classes): train on some classes, hold the others out as
    near-out-of-distribution data.
    ``root`` defaults to :func:`data_root`. ``download``: ``None`` or ``True`` = download
    with torchvision only if no local copy exists, ``False`` = never use the network.
    Raises :class:`DatasetUnavailableError` (a ``RuntimeError``) naming the fixes when the
    data can be neither found nor downloaded.

    Shapes: Fashion-MNIST ``x`` ``(N, 1, 28, 28)``, CIFAR-10 ``(N, 3, 32, 32)``, float32;
    ``y`` ``(N,)`` int64. The result is memoised: the same arguments return the same object
    (do not modify its tensors in place).

    >>> ds = load_dataset("fashion_mnist", n_train=1000, n_val=500, n_test=500)  # doctest: +SKIP
    >>> ds.train.x.shape, ds.val.y.shape, ds.test.x.dtype  # doctest: +SKIP
    (torch.Size([1000, 1, 28, 28]), torch.Size([500]), torch.float32)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    check_choice("name", name, available_datasets())
    n_train = None if n_train is None else as_int("n_train", n_train, minimum=1)
    n_val = as_int("n_val", n_val, minimum=0)
    n_test = None if n_test is None else as_int("n_test", n_test, minimum=1)
    seed = as_int("seed", seed, minimum=0)
    if download is not None and not isinstance(download, bool):
        raise TypeError(f"download must be True, False or None, got {download!r}")
    num_all = len(_SOURCES[name][1])
    if classes is not None:
        if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
            raise TypeError(f"classes must be None or a sequence of class indices, got {classes!r}")
        classes = tuple(as_int(f"classes[{i}]", c, minimum=0) for i, c in enumerate(classes))
        if len(set(classes)) != len(classes) or len(classes) < 2 or max(classes) >= num_all:
            raise ValueError(f"classes must hold at least 2 distinct class indices in [0, {num_all - 1}], "
                             f"got {classes}")
    root_path = (pathlib.Path(root).expanduser() if root is not None else data_root()).resolve()
    root_path.mkdir(parents=True, exist_ok=True)
    return _dataset(name, n_train, n_val, n_test, seed, classes, str(root_path), download)


@functools.lru_cache(maxsize=16)
def _dataset(name: str, n_train: int | None, n_val: int, n_test: int | None, seed: int,
             classes: tuple[int, ...] | None, root: str, download: bool | None) -> ImageDataset:
    _, names, mean, std = _SOURCES[name]
    x_train, y_train, x_test, y_test = _raw(name, root, download)
    if classes is not None:
        names = tuple(names[c] for c in classes)
        x_train, y_train = _keep_classes(x_train, y_train, classes)
        x_test, y_test = _keep_classes(x_test, y_test, classes)

    n_pool = len(y_train)
    if n_val >= n_pool:
        raise ValueError(f"n_val must be < {n_pool} (the size of {name}'s training set), got {n_val}")
    if n_train is not None and n_val + n_train > n_pool:
        raise ValueError(f"n_train + n_val must be <= {n_pool} (the size of {name}'s training set"
                         f"{' in these classes' if classes else ''}), got n_train={n_train} + n_val={n_val}")
    if n_test is not None and n_test > len(y_test):
        raise ValueError(f"n_test must be <= {len(y_test)} (the size of {name}'s test set) or None, got {n_test}")

    order = _stratified_order(y_train, seed)
    val_idx = order[:n_val]
    train_idx = order[n_val:] if n_train is None else order[n_val:n_val + n_train]
    test_idx = (torch.arange(len(y_test)) if n_test is None
                else _stratified_order(y_test, _TEST_SUBSET_SEED)[:n_test])

    def split(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> Split:
        return Split(_normalise(x[idx], mean, std).contiguous(), y[idx].clone())

    return ImageDataset(name=name, classes=names, train=split(x_train, y_train, train_idx),
                        val=split(x_train, y_train, val_idx), test=split(x_test, y_test, test_idx),
                        mean=mean, std=std)


def _keep_classes(x: torch.Tensor, y: torch.Tensor, classes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples of ``classes`` only, relabelled by their position in ``classes``."""
    lookup = torch.full((int(y.max()) + 1,), -1, dtype=torch.int64)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    new = lookup[y]
    keep = new >= 0
    return x[keep], new[keep]


def load_profile_data(profile: Any, *, seed: int = 0) -> ImageDataset:
    """:func:`load_dataset` with a :class:`~lsutils.config.Profile`'s dataset and sizes (data seed ``seed``).

    >>> from lsutils.config import get_profile
    >>> ds = load_profile_data(get_profile("smoke"))  # doctest: +SKIP
    >>> len(ds.train), len(ds.val), len(ds.test)  # doctest: +SKIP
    (2000, 1000, 1000)
    """
    for attr in ("dataset", "n_train", "n_val", "n_test"):
        if not hasattr(profile, attr):
            raise TypeError(f"profile must be an lsutils Profile (from get_profile()), got {type(profile).__name__} "
                            f"without .{attr}")
    return load_dataset(profile.dataset, n_train=profile.n_train, n_val=profile.n_val, n_test=profile.n_test,
                        seed=seed)


def load_digits_ood(size: int = 28, mean: tuple[float, ...] | float = FASHION_MNIST_MEAN,
                    std: tuple[float, ...] | float = FASHION_MNIST_STD) -> torch.Tensor:
    """scikit-learn's handwritten digits as an out-of-distribution set for Fashion-MNIST models.

    The 1,797 images of 8×8 pixels with values 0..16 are scaled to [0, 1] (0 = background,
    as in Fashion-MNIST), resized to ``size``×``size`` with bilinear interpolation, then
    normalised with ``mean``/``std`` (default: Fashion-MNIST's, so the model sees them exactly
    as it sees its own inputs). Returns ``(1797, 1, size, size)`` float32; memoised.

    >>> x = load_digits_ood()
    >>> x.shape
    torch.Size([1797, 1, 28, 28])
    """
    size = as_int("size", size, minimum=8)
    mean_t = (as_real("mean", mean),) if not isinstance(mean, (tuple, list)) else tuple(as_real("mean", m) for m in mean)
    std_t = (as_real("std", std),) if not isinstance(std, (tuple, list)) else tuple(as_real("std", v) for v in std)
    if len(mean_t) != 1 or len(std_t) != 1:
        raise ValueError(f"digits are grey (one channel): mean and std must have one value each, got {mean} and {std}")
    if not std_t[0] > 0:
        raise ValueError(f"std must be > 0, got {std}")
    return _digits(size, mean_t[0], std_t[0])


@functools.lru_cache(maxsize=4)
def _digits(size: int, mean: float, std: float) -> torch.Tensor:
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    up = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return ((up - mean) / std).contiguous()
