"""The book's API page, generated from the docstrings of ``lsutils`` (one source of truth).

    python tools/api_page.py --write   # (re)write chapters/api.md
    python tools/api_page.py --check   # exit 1 if chapters/api.md is not what the docstrings give

The page lists every name at the top level of ``lsutils`` (what ``import lsutils as ls`` gives) with its signature and
its docstring, then, module by module, the other public names of the core with their one-line summaries. It is plain
Markdown, so it reads the same in the book and on GitHub. ``tests/test_book.py`` fails when the page is stale.
"""
from __future__ import annotations

import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "chapters" / "api.md"

#: The top-level names, grouped as the reader meets them (every name of ``lsutils.__all__`` that is not a module).
GROUPS = [
    ("Compute profiles and data", ["get_profile", "default_device", "load_dataset", "load_profile_data"]),
    ("Targets and losses", ["smooth_targets", "convert_epsilon", "smoothed_cross_entropy", "distillation_loss",
                            "als_loss", "optimal_logit_gap", "smoothing_spec", "register_loss"]),
    ("Models and training", ["build_model", "predict_logits", "penultimate", "fit", "evaluate", "RunSpec",
                             "train_model", "train_many"]),
    ("Metrics", ["accuracy", "nll", "expected_calibration_error", "fit_temperature", "plot_reliability", "msp_score",
                 "max_logit_score", "energy_score", "ood_metrics", "risk_coverage_curve", "aurc"]),
    ("Results over seeds", ["mean_std", "paired_comparison"]),
]
#: Core modules, in reading order, for the second part of the page.
MODULES = ["targets", "losses", "metrics", "data", "models", "train", "config", "geometry", "stats", "seq"]

_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj):`~?([^`]+)`")


def _markdown(doc: str) -> str:
    """A docstring as Markdown: Sphinx roles become code, doctest blocks become Python code blocks."""
    doc = _ROLE.sub(lambda m: f"`{m.group(1)}`", doc)
    out, in_code = [], False
    for line in doc.splitlines():
        is_doctest = line.lstrip().startswith((">>>", "..."))
        if is_doctest and not in_code:
            out.append("```python")
            in_code = True
        elif in_code and not line.strip():
            out.append("```")
            in_code = False
        out.append(line)
    if in_code:
        out.append("```")
    return "\n".join(out).strip()


def _summary(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    first = doc.split("\n\n")[0].replace("\n", " ").strip()
    return _ROLE.sub(lambda m: f"`{m.group(1)}`", first)


def _signature(name: str, obj) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        sig = ""
    kind = "class " if inspect.isclass(obj) else ""
    text = f"{kind}{name}{sig}"
    return textwrap.fill(text, 110, subsequent_indent="    ", break_long_words=False, break_on_hyphens=False)


def render() -> str:
    ls = importlib.import_module("lsutils")
    names = [n for n in ls.__all__ if not inspect.ismodule(getattr(ls, n))]
    grouped = [n for _, group in GROUPS for n in group]
    missing = sorted(set(names) - set(grouped))
    extra = sorted(set(grouped) - set(names))
    if missing or extra:
        raise SystemExit(f"tools/api_page.py: GROUPS is out of date: add {missing}, remove {extra}")
    lines = [
        "# API reference",
        "",
        "`lsutils` is the book's library, usable on its own (`pip install` this repository). The names below are what",
        "`import lsutils as ls` gives; the rest of the library is one level down (`ls.metrics.max_calibration_error`).",
        "Every chapter's own code (settings, run lists, figures) lives in `lsutils.book`, which the core never imports.",
        "This page is generated from the docstrings by `tools/api_page.py`.",
        "",
    ]
    for title, group in GROUPS:
        lines += [f"## {title}", ""]
        for name in group:
            obj = getattr(ls, name)
            lines += [f"### `ls.{name}`", "", "```text", _signature(name, obj), "```", "",
                      _markdown(inspect.getdoc(obj) or "(no docstring)"), ""]
    lines += ["## The modules", "",
              "Every public name of the core, module by module, with its one-line summary.", ""]
    for mod_name in MODULES:
        try:
            mod = importlib.import_module(f"lsutils.{mod_name}")
        except ImportError:
            continue
        lines += [f"### `lsutils.{mod_name}`", "", _summary(mod), "", "| name | what it is |", "| --- | --- |"]
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            documented = callable(obj) and (inspect.getdoc(obj) or "") != (inspect.getdoc(type(obj)) or "")
            what = _summary(obj) if documented else f"constant: `{obj!r}`"[:120]
            what = what.replace("|", "\\|")
            lines.append(f"| `{name}` | {what} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    text = render()
    if argv == ["--write"]:
        PAGE.write_text(text, encoding="utf-8")
        print(f"wrote {PAGE.relative_to(ROOT)}")
        return 0
    if argv == ["--check"]:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run python tools/api_page.py --write")
            return 1
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
