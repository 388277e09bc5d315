"""Execute chapter notebooks in place and report how long each took (what `make outputs` runs).

    python tools/execute.py                       # every chapter, profile from $LSUTILS_PROFILE (default: cpu)
    python tools/execute.py chapters/03_*.ipynb   # some chapters

Each notebook runs in its own kernel from the ``chapters/`` folder, in order, with nbclient; a failing cell stops
the run with the cell's error. The last lines printed are a table of seconds per chapter and the total, the
numbers the README quotes for "the whole book on this machine".
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def main(paths: list[str]) -> int:
    os.environ.setdefault("LSUTILS_PROFILE", "cpu")
    notebooks = [Path(p).resolve() for p in paths] or sorted((ROOT / "chapters").glob("*.ipynb"))
    times = []
    for path in notebooks:
        print(f"==> {path.relative_to(ROOT)} (LSUTILS_PROFILE={os.environ['LSUTILS_PROFILE']})", flush=True)
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds = time.perf_counter() - t0
        nbformat.write(nb, path)
        times.append((path.name, seconds))
        print(f"    {seconds:.1f} s", flush=True)
    width = max(len(n) for n, _ in times)
    print("\nchapter".ljust(width + 1), "seconds")
    for name, seconds in times:
        print(name.ljust(width), f"{seconds:7.1f}")
    print("total".ljust(width), f"{sum(s for _, s in times):7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
