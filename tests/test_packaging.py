"""Packaging: what ``lsutils`` imports is what it declares, and ``requirements.txt`` installs what it declares.

* every third-party module imported anywhere in ``lsutils/`` (read with ``ast``, nothing is imported) belongs to a
  distribution listed in ``pyproject.toml``'s ``[project] dependencies``, so that ``pip install lsutils`` (Colab's
  set-up cell does exactly that) gives a package that imports. Imports guarded by ``try: ... except ImportError``
  (optional extras such as IPython and myst_nb) and imports under ``if TYPE_CHECKING:`` are allowed;
* ``requirements.txt`` (with the files it includes with ``-r``) lists every dependency of ``pyproject.toml``
  with the same version specifier, so that ``make setup`` installs the same lower bounds.

Import names map to distributions through the installed metadata (``importlib.metadata.packages_distributions``),
with a table for the usual mismatches (``sklearn`` → ``scikit-learn``, ``PIL`` → ``pillow``, ...) where a module
is not installed.
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lsutils"

# import name -> distribution name, for modules whose distribution is named otherwise (used when the installed
# metadata does not know the module)
KNOWN = {"sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml", "cv2": "opencv-python",
         "skimage": "scikit-image", "bs4": "beautifulsoup4", "attr": "attrs", "dateutil": "python-dateutil",
         "IPython": "ipython", "google.protobuf": "protobuf"}
OPTIONAL_GUARDS = {"ImportError", "ModuleNotFoundError"}


def normalise(name: str) -> str:
    """PEP 503 normalised distribution name (``Scikit_Learn`` → ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> tuple[str, str] | None:
    """``("name", "specifier")`` of a requirement line (``torch>=2.1 ; python_version > "3.8"`` → ``("torch",
    ">=2.1")``); ``None`` for comments, blank lines and options."""
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        return None
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)", line)
    assert m, f"cannot read the requirement {line!r}"
    return normalise(m.group(1)), re.sub(r"\s+", "", m.group(3))


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = []
    if handler.type is None:
        return False
    for node in ast.walk(handler.type):
        if isinstance(node, ast.Name):
            names.append(node.id)
        elif isinstance(node, ast.Attribute):
            names.append(node.attr)
    return bool(OPTIONAL_GUARDS & set(names))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """Every absolute import of a module: ``(top-level module, line, optional)``; ``optional`` when it sits in a
    ``try`` that catches ImportError, or under ``if TYPE_CHECKING:``. ``importlib.import_module("x")`` with a
    literal name counts as an import of ``x``."""
    found = []

    def visit(node: ast.AST, optional: bool) -> None:
        if isinstance(node, ast.Try) or (sys.version_info >= (3, 11) and isinstance(node, getattr(ast, "TryStar"))):
            guarded = optional or any(_catches_import_error(h) for h in node.handlers)
            for child in node.body:
                visit(child, guarded)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, optional)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, optional)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno, optional) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno, optional))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and not node.args[0].value.startswith(".")):
            found.append((node.args[0].value, node.lineno, optional))
        for child in ast.iter_child_nodes(node):
            visit(child, optional)

    visit(tree, False)
    return found


@functools.lru_cache(maxsize=1)
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # scans every installed distribution: once


def distributions_of(module: str) -> set[str]:
    """The distributions that provide ``module`` (normalised names)."""
    top = module.split(".")[0]
    installed = _installed().get(top, [])
    names = {normalise(d) for d in installed}
    if module in KNOWN or top in KNOWN:
        names.add(normalise(KNOWN.get(module, KNOWN.get(top, top))))
    return names or {normalise(top)}


def third_party_imports() -> dict[str, list[str]]:
    """``{top-level module: ["lsutils/x.py:12", ...]}`` for every required (non-optional) third-party import."""
    stdlib = set(sys.stdlib_module_names)
    out: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for module, line, optional in imports(tree):
            top = module.split(".")[0]
            if optional or top in stdlib or top == "lsutils" or top == "__future__":
                continue
            out.setdefault(module if module in KNOWN else top, []).append(f"{path.relative_to(ROOT)}:{line}")
    return out


def pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements(path: Path, seen: set[Path] | None = None) -> dict[str, str]:
    """``{name: specifier}`` of a requirements file and the files it includes (``-r other.txt``)."""
    seen = seen if seen is not None else set()
    if path in seen:
        return {}
    seen.add(path)
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        m = re.match(r"^(-r|--requirement)\s*=?\s*(\S+)", line)
        if m:
            out.update(requirements((path.parent / m.group(2)).resolve(), seen))
            continue
        req = requirement_name(line)
        if req:
            out[req[0]] = req[1]
    return out


def declared() -> dict[str, str]:
    deps = pyproject()["project"]["dependencies"]
    return dict(r for r in map(requirement_name, deps) if r)


# --------------------------------------------------------------------------------------------- the tests
def test_every_third_party_import_of_lsutils_is_a_declared_dependency():
    deps = set(declared())
    missing = {module: where for module, where in third_party_imports().items() if not distributions_of(module) & deps}
    assert not missing, ("lsutils imports modules whose distribution is not in pyproject.toml's [project] "
                         "dependencies (add it there and to requirements.txt, or guard an optional import with "
                         "try/except ImportError):\n" + "\n".join(
                             f"  - {m} (distribution {sorted(distributions_of(m))}): {', '.join(w[:3])}"
                             for m, w in sorted(missing.items())))


def test_requirements_txt_installs_every_declared_dependency():
    reqs = requirements(ROOT / "requirements.txt")
    problems = []
    for name, spec in declared().items():
        if name not in reqs:
            problems.append(f"{name}{spec}: missing from requirements.txt")
        elif reqs[name] != spec:
            problems.append(f"{name}: pyproject.toml says {spec or '(any)'!r}, requirements.txt says {reqs[name] or '(any)'!r}")
    assert not problems, "requirements.txt does not match pyproject.toml's dependencies:\n" + \
        "\n".join(f"  - {p}" for p in problems)


# --------------------------------------------------------------------------------------------- the checks themselves
def test_import_reader_on_a_hand_made_module():
    tree = ast.parse(
        "import os, numpy as np\n"
        "from sklearn.metrics import roc_auc_score\n"
        "from . import sibling\n"
        "from .x import y\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import pandas\n"
        "try:\n"
        "    import IPython\n"
        "except (ImportError, AttributeError):\n"
        "    import fallback_only_here\n"
        "try:\n"
        "    import yaml\n"
        "except ValueError:\n"
        "    pass\n"
        "def f():\n"
        "    import importlib\n"
        "    return importlib.import_module('seaborn')\n")
    got = {(m, opt) for m, _, opt in imports(tree)}
    assert got == {("os", False), ("numpy", False), ("sklearn.metrics", False), ("typing", False),
                   ("pandas", True), ("IPython", True), ("fallback_only_here", False), ("yaml", False),
                   ("importlib", False), ("seaborn", False)}


def test_distribution_names():
    assert "scikit-learn" in distributions_of("sklearn")
    assert "pillow" in distributions_of("PIL")
    assert distributions_of("numpy") == {"numpy"}
    assert requirement_name("Scikit_Learn >= 1.2 ; python_version > '3.8'  # comment") == ("scikit-learn", ">=1.2")
    assert requirement_name("-r requirements-book.txt") is None
