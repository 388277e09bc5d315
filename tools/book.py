"""Build the book with Jupyter Book 1.x.

    python tools/book.py execute     # execute notebooks (cached) and build _build/html   (make book)
    python tools/book.py committed   # build from the committed outputs, warnings as errors (make test)

The second mode writes a copy of ``_config.yml`` with ``execute_notebooks: "off"`` under ``_build/`` and
builds into ``_build/committed/`` so that it never mixes with the executed book.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# jupyter_book.cli.main has no ``__main__`` guard (``python -m`` would silently do nothing): call its click group.
JB = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.argv[0] = 'jupyter-book'; main()"]


def main(mode: str) -> int:
    if mode == "execute":
        cmd = JB + ["build", str(ROOT)]
        out = ROOT / "_build" / "html" / "index.html"
    elif mode == "committed":
        config = yaml.safe_load((ROOT / "_config.yml").read_text())
        config.setdefault("execute", {})["execute_notebooks"] = "off"
        # paths in the config are relative to its own folder: this copy lives in _build/, so make them absolute
        local = config.get("sphinx", {}).get("local_extensions") or {}
        for name, path in local.items():
            local[name] = str((ROOT / path).resolve())
        config["bibtex_bibfiles"] = [str((ROOT / f).resolve()) for f in config.get("bibtex_bibfiles", [])]
        generated = ROOT / "_build" / "_config_committed.yml"
        generated.parent.mkdir(exist_ok=True)
        generated.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = JB + ["build", str(ROOT), "--config", str(generated), "--path-output", str(ROOT / "_build" / "committed"),
                    "-W", "-n", "--keep-going", "--all"]
        out = ROOT / "_build" / "committed" / "_build" / "html" / "index.html"
    else:
        print(__doc__)
        return 2
    print("$ jupyter-book", " ".join(cmd[3:]), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc == 0:
        print(f"\nThe book is built: open file://{out}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
