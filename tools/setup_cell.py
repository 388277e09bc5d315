"""The first cell of every chapter, from one source of truth.

    python tools/setup_cell.py --check   # exit 1 and list the chapters whose first code cell is not the canonical one
    python tools/setup_cell.py --write   # insert or update that cell in every chapter notebook

On Colab the cell installs ``lsutils`` from the book's repository (the URL is read from ``_config.yml``,
``repository.url``); the GPU is then picked by ``lsutils.get_profile()``. Anywhere else it does nothing visible.
It is tagged ``remove-cell`` (CONTRIBUTING.md): the book does not show it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
TAG = "lsutils-setup"


def repository_url() -> str:
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    return url.rstrip("/")


def cell_source() -> str:
    return (
        "# Set-up: on Colab, install lsutils from the book's repository (chapters then use the GPU if the\n"
        "# runtime has one). Anywhere else this cell does nothing.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install -q "lsutils @ git+{repository_url()}"\n'
    )


def chapter_notebooks() -> list[Path]:
    return sorted((ROOT / "chapters").glob("*.ipynb"))


def first_code_cell(nb) -> tuple[int, object] | tuple[None, None]:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            return i, cell
    return None, None


def problems() -> list[str]:
    out = []
    for path in chapter_notebooks():
        nb = nbformat.read(path, as_version=4)
        _, cell = first_code_cell(nb)
        if cell is None or cell.source != cell_source():
            out.append(f"{path.relative_to(ROOT)}: first code cell is not the canonical set-up cell")
    return out


def write() -> None:
    """Make every chapter's first code cell the canonical one, tagged ``lsutils-setup`` and ``remove-cell`` (the book
    does not show it; Colab and JupyterLab run it). A cell that is already right is left untouched (no id or
    metadata churn); an existing set-up cell is updated in place (its id stays)."""
    for path in chapter_notebooks():
        nb = nbformat.read(path, as_version=4)
        _, cell = first_code_cell(nb)
        if cell is not None and TAG in cell.metadata.get("tags", []):
            tags = [t for t in cell.metadata["tags"] if t not in ("hide-cell", "hide-input", "remove-input")]
            tags += [t for t in (TAG, "remove-cell") if t not in tags]
            if cell.source == cell_source() and tags == cell.metadata["tags"]:
                continue  # already canonical
            cell.source = cell_source()
            cell.metadata["tags"] = tags
        else:  # insert right after the title cell
            new = nbformat.v4.new_code_cell(cell_source(), metadata={"tags": [TAG, "remove-cell"]})
            nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0, new)
        nbformat.write(nb, path)
        print(f"updated {path.relative_to(ROOT)}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
    found = problems()
    for p in found:
        print(p)
    sys.exit(1 if found and "--check" in sys.argv else 0)
