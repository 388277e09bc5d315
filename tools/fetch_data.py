"""Make Fashion-MNIST available offline, once, for the book and its tests (run by ``tools/setup.sh``).

    python tools/fetch_data.py            # find Fashion-MNIST, or download it once; say where it came from
    python tools/fetch_data.py --check    # only say where it is; exit 1 if there is no offline copy

Where the data can come from, in this order:

1. ``<data root>/FashionMNIST/raw/``: the four decompressed IDX files from an earlier run (the data root is
   ``lsutils.data_root()``: ``data/`` in this repository, or ``$LSUTILS_DATA``);
2. Debian's package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/*.gz``, what
   ``tools/setup.sh`` installs when it runs as root with apt); lsutils decompresses them into 1.;
3. torchvision's download (``lsutils.load_dataset(..., download=True)``, MD5-checked), which stores the
   raw IDX files in 1., so that it happens once.

The tests and nbval run with the network off (``tools/netoff.sh``): set-up must have fetched the data
before. ``tests/conftest.py`` (fixture ``fashion_mnist_root``) uses 1. or 2., never the network.
Exit status: 0 when the data is there afterwards, 1 (with the fixes) when it is not.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The four files of Fashion-MNIST (Xiao et al. 2017), decompressed, as torchvision expects them.
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def raw_folder(root: Path) -> Path:
    """Where torchvision (and so lsutils) keeps the decompressed Fashion-MNIST under a data root."""
    return root / "FashionMNIST" / "raw"


def has_raw_files(folder: Path) -> bool:
    """True when ``folder`` holds all four decompressed IDX files (non-empty)."""
    return all((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in FASHION_MNIST_FILES)


def has_debian_files(folder: Path) -> bool:
    """True when ``folder`` holds Debian's four gzipped IDX files."""
    return all((folder / f"{name}.gz").is_file() for name in FASHION_MNIST_FILES)


def locate(root: Path, debian: Path) -> str | None:
    """Describe the offline copy that loading would use (data root first, then Debian's), or ``None``."""
    if has_raw_files(raw_folder(root)):
        return f"already in {raw_folder(root)}"
    if has_debian_files(debian):
        return f"Debian's dataset-fashion-mnist in {debian}"
    return None


def fetch(download: bool = True) -> int:
    """Find Fashion-MNIST, downloading it once if allowed and needed; print where it came from. Returns the exit status."""
    from lsutils import data as lsdata  # imports torch: keep it out of module import (tests load this file)

    root = lsdata.data_root()
    debian = Path(lsdata.DEBIAN_FASHION_MNIST_DIR)
    found = locate(root, debian)
    if found is None and not download:
        print(f"Fashion-MNIST: no offline copy (neither {raw_folder(root)} nor {debian}); "
              f"run `python tools/fetch_data.py` (downloads it once) or `sudo apt-get install dataset-fashion-mnist`",
              file=sys.stderr)
        return 1
    if found is not None and not download:
        print(f"Fashion-MNIST: {found}")
        return 0
    source = found or f"downloaded by torchvision into {raw_folder(root)}"
    if found is None:
        print(f"Fashion-MNIST: not on this machine; downloading it once into {raw_folder(root)} ...", flush=True)
    try:
        # a tiny load goes through the same code as the book: Debian's files are decompressed into the data
        # root, or torchvision downloads the raw files there
        lsdata.load_dataset("fashion_mnist", n_train=10, n_val=10, n_test=10, download=True)
    except lsdata.DatasetUnavailableError as exc:
        print(f"Fashion-MNIST could not be made available; the tests and the book need it.\n{exc}", file=sys.stderr)
        return 1
    if not has_raw_files(raw_folder(root)) and not has_debian_files(debian):
        print(f"Fashion-MNIST: loading worked but {raw_folder(root)} lacks some of {list(FASHION_MNIST_FILES)}",
              file=sys.stderr)
        return 1
    print(f"Fashion-MNIST: {source}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="never download; exit 1 if there is no offline copy")
    args = parser.parse_args(argv)
    return fetch(download=not args.check)


if __name__ == "__main__":
    sys.exit(main())
