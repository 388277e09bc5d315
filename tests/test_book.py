"""Structural checks of the book itself: the table of contents, the committed notebooks, the set-up cell, glue and citations.

These are fast (no notebook is executed here; nbval does that) and catch what a reader would see broken online:
a chapter missing from the table of contents, a notebook committed without outputs or with an error, an SVG figure,
a number in the prose that no cell glues, a citation key that is not in the bibliography.

``test_chapter_convention`` runs each check of ``tools/nbconventions.py`` (the conventions of CONTRIBUTING.md:
no ``{glue}`` in markdown, no ``# NBVAL_`` comments, the Colab cell tagged ``remove-cell``, no warnings or machine
paths in outputs, progress bars in their final state only, a solution cell per exercise) on every chapter, one
test per chapter and check; ``test_toc_numbers_the_chapters`` checks ``_toc.yml``.
"""
from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    return files


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bib_keys() -> set[str]:
    return set(re.findall(r"^@\w+\{([^,\s]+),", (ROOT / "references.bib").read_text(), re.M))


def test_there_are_chapters():
    assert len(CHAPTERS) >= 2, "no chapter notebooks found in chapters/"


def test_toc_lists_every_chapter_and_only_existing_files():
    toc = _toc_files()
    for f in toc:
        assert (ROOT / f"{f}.ipynb").exists() or (ROOT / f"{f}.md").exists(), f"_toc.yml names a missing file: {f}"
    for nb in CHAPTERS:
        assert f"chapters/{nb.stem}" in toc, f"{nb.name} is not in _toc.yml (the book would not show it)"


def test_every_chapter_starts_with_the_canonical_setup_cell():
    assert _load_tool("setup_cell").problems() == [], "run: .venv/bin/python tools/setup_cell.py --write"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_committed_notebook(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells and nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), \
        f"{path.name}: the first cell must be the chapter's '# Title'"
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert code and all(c.execution_count for c in code), f"{path.name}: committed without executing every code cell"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"], f"{path.name}: an error output is committed"
    assert not [o for o in outputs if "image/svg+xml" in o.get("data", {})], f"{path.name}: SVG output (use PNG)"
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    # every number glued into the prose was glued by this notebook's run (myst-nb stores each glued value as an
    # output whose metadata names it), so the committed page shows it
    used = set(re.findall(r"\{glue(?::text|:md|:any)?\}`([^`:]+)", markdown))
    glued = {o["metadata"]["scrapbook"]["name"] for o in outputs if "scrapbook" in o.get("metadata", {})}
    missing = used - glued
    assert not missing, f"{path.name}: prose uses glue names that no committed output holds: {sorted(missing)}"
    # citations exist in references.bib
    cites = {k.strip() for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", markdown) for k in group.split(",")}
    assert cites, f"{path.name}: no {{cite}} — every chapter cites its sources"
    unknown = cites - _bib_keys()
    assert not unknown, f"{path.name}: citation keys missing from references.bib: {sorted(unknown)}"


CONVENTIONS = _load_tool("nbconventions")


@functools.lru_cache(maxsize=None)
def _notebook(path: Path):
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("check", list(CONVENTIONS.NOTEBOOK_CHECKS))
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_convention(path, check):
    problems = CONVENTIONS.NOTEBOOK_CHECKS[check](_notebook(path))
    shown = "\n".join(f"  - {p}" for p in problems[:15]) + (f"\n  ... and {len(problems) - 15} more"
                                                            if len(problems) > 15 else "")
    assert not problems, (f"{path.name} breaks a convention of CONTRIBUTING.md ({check}, "
                          f"`python tools/nbconventions.py {path.relative_to(ROOT)}` lists them all):\n{shown}")


def test_toc_numbers_the_chapters():
    problems = CONVENTIONS.toc_numbered(yaml.safe_load((ROOT / "_toc.yml").read_text()), ROOT)
    assert not problems, "\n".join(problems)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme
    assert re.search(r"^make test\s*$", ci, re.M), ".ci/run must call exactly the README's test command: make test"


def test_decision_guide_links_every_advice_to_its_evidence():
    """Each row of the guide's table points to a chapter ({doc}), every {doc} target exists, and the guide is in the toc."""
    guide = ROOT / "chapters" / "10_decision_guide.md"
    text = guide.read_text()
    assert "chapters/10_decision_guide" in _toc_files()
    targets = re.findall(r"\{doc\}`([^`]+)`", text)
    assert targets, "the decision guide links to no chapter"
    for target in targets:
        assert ((ROOT / "chapters" / f"{target}.ipynb").exists()
                or (ROOT / "chapters" / f"{target}.md").exists()), f"{{doc}}`{target}` names no page"
    section = text.split("## What do you want?")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| **")]
    assert len(rows) >= 8, "the guide's table lost rows"
    for row in rows:
        assert "{doc}`0" in row.rsplit("|", 2)[-2], f"a row of the guide cites no chapter: {row[:80]}"
    assert "{doc}`10_decision_guide`" in (ROOT / "chapters" / "intro.md").read_text(), "intro.md does not link the guide"


def test_book_build_skips_hidden_folders(tmp_path):
    """A README.md left in .pytest_cache (any manual `pytest` run writes one) or another tool's hidden folder must not
    become a page: the `-W` build of `make test` would fail on "document isn't included in any toctree". Checked with
    the function Sphinx finds its source files with (sphinx.util.matching.Matcher expands "**/" patterns that this
    search does not)."""
    from sphinx.util.matching import get_matching_files

    patterns = yaml.safe_load((ROOT / "_config.yml").read_text())["exclude_patterns"]
    hidden = [".pytest_cache/README.md", ".mypy_cache/README.md", "chapters/.ipynb_checkpoints/x.md", ".github/x.md"]
    pages = ["chapters/intro.md", "chapters/04_calibration.ipynb", "_static/wrap.css"]
    for path in hidden + pages:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    found = set(get_matching_files(tmp_path, exclude_patterns=patterns))
    assert found == set(pages), f"exclude_patterns {patterns}: built {sorted(found - set(pages))}, " \
                                f"skipped {sorted(set(pages) - found)}"
