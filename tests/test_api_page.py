"""The API page is generated from the docstrings (tools/api_page.py) and must not go stale; every top-level name of
lsutils is documented, and the top level stays small (a reader's library, not the book's experiments)."""
from __future__ import annotations

import ast
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import lsutils

ROOT = Path(__file__).resolve().parents[1]


def test_api_page_is_up_to_date():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "api_page.py"), "--check"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_top_level_is_small_documented_and_has_no_chapter_code():
    # in a fresh interpreter: importing lsutils.book elsewhere in the test session adds "book" to the package
    out = subprocess.run([sys.executable, "-c", "import lsutils; print(' '.join(n for n in dir(lsutils) if n[0] != '_'))"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=True)
    public = out.stdout.split()
    assert len(public) <= 45, f"lsutils exposes {len(public)} names: {public}"
    # nothing public by accident (a `from __future__ import annotations` binds the name `annotations`)
    assert sorted(public) == sorted(lsutils.__all__), set(public) ^ set(lsutils.__all__)
    for name in lsutils.__all__:
        obj = getattr(lsutils, name)
        assert (inspect.getdoc(obj) or "").strip(), f"lsutils.{name} has no docstring"
    assert "book" not in public


def test_core_never_imports_the_book():
    for path in (ROOT / "lsutils").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [f"{'.' * node.level}{node.module or ''}"] + [f"{'.' * node.level}{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.startswith(("lsutils.book", ".book")) or n == "book" for n in names), \
                f"{path.name} imports the book: {names}"


def test_the_api_page_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    assert "chapters/api" in toc
    assert importlib.util.find_spec("lsutils.book") is not None
