"""Check chapter notebooks against the conventions of CONTRIBUTING.md, without executing anything.

    python tools/nbconventions.py                        # every chapter notebook and _toc.yml
    python tools/nbconventions.py chapters/03_*.ipynb    # some notebooks

Prints one line per problem and exits 1 if there is any. ``tests/test_book.py`` runs every check on every chapter
(one test per chapter and check); ``tests/test_nbconventions.py`` shows each check on small hand-made notebooks.

Each notebook check takes an ``nbformat`` notebook and returns a list of problems (empty: the notebook follows the
convention), each naming the cell (1-based, as ``cell N``) and quoting what is wrong:

* ``no_glue_in_markdown``: no ``{glue`` role in a markdown cell (it renders only in the book; write the sentence
  with ``ch.md(f"...")`` in a cell tagged ``remove-input``);
* ``no_nbval_comments``: no ``# NBVAL_...`` comment in code (use the cell tag ``nbval-check-output``);
* ``setup_cell_removed``: the Colab set-up cell (tag ``lsutils-setup``, or a first code cell that tests for
  ``google.colab``) is tagged ``remove-cell``;
* ``no_warnings_in_outputs``: no committed stderr output carries a warning (``...Warning``, ``WARNING``, the
  ``warnings.warn(`` line that Python prints under it);
* ``no_machine_paths_in_outputs``: no text output (streams, text/HTML/Markdown/LaTeX/JSON data, tracebacks)
  contains a machine path (``/work/``, ``/home/``, ``/tmp/``, ``/root/``, ``/Users/``, ``site-packages``);
* ``progress_bars_final_only``: no stream output keeps a progress bar's intermediate states (a line with text
  both before and after a ``\\r``; ``tools/execute.py`` keeps only the final state);
* ``exercises_have_solutions``: a ``## Exercises`` section has a ``## Solutions`` section with at least as many
  code cells tagged ``hide-cell`` as numbered exercises.

``toc_numbered`` checks ``_toc.yml``: every part that holds chapter notebooks is numbered (``numbered: true`` on
the part, or ``defaults: {numbered: true}``; a top-level ``options:`` has no effect when the book has parts).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Callable

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]

GLUE = re.compile(r"\{glue")
NBVAL_COMMENT = re.compile(r"#\s*NBVAL_\w*")
WARNING = re.compile(r"\w*Warning\b|\bWARNING\b|warnings\.warn\(")
MACHINE_PATHS = ("/work/", "/home/", "/tmp/", "/root/", "/Users/", "site-packages")
SETUP_TAG = "lsutils-setup"
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
NUMBERED_ITEM = re.compile(r"^\d+[.)]\s+\S")      # "1. ..." at the start of a line: one exercise
EXERCISE_HEADING = re.compile(r"^###\s+Exercise\b", re.I)

Check = Callable[[nbformat.NotebookNode], "list[str]"]


def _cells(nb, kind: str | None = None):
    """``(number, cell)`` with 1-based cell numbers, optionally only ``kind`` cells."""
    return [(i, c) for i, c in enumerate(nb.cells, start=1) if kind is None or c.cell_type == kind]


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _snippet(text: str, start: int, width: int = 70) -> str:
    return repr(text[max(0, start - 20):start + width].replace("\n", " "))


def _streams(cell) -> list[tuple[str, str]]:
    """The cell's stream outputs as ``(name, text)``, consecutive outputs of the same stream merged (as every
    notebook viewer shows them)."""
    merged: list[list[str]] = []
    for out in cell.get("outputs", []):
        if out.get("output_type") != "stream":
            merged.append(["", ""])  # anything else separates streams
            continue
        text = out.get("text", "")
        text = "".join(text) if isinstance(text, list) else text
        if merged and merged[-1][0] == out.get("name"):
            merged[-1][1] += text
        else:
            merged.append([out.get("name", ""), text])
    return [(name, text) for name, text in merged if name]


def _output_texts(cell):
    """Every text an output of the cell shows, as ``(what, text)``; images (base64) are left out."""
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            text = out.get("text", "")
            yield f"{out.get('name')} stream", "".join(text) if isinstance(text, list) else text
        elif kind == "error":
            yield "error", "\n".join([out.get("ename", ""), out.get("evalue", ""), *out.get("traceback", [])])
        else:
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") or mime.endswith("json") or mime == "application/javascript":
                    yield mime, value if isinstance(value, str) else "".join(value) if isinstance(value, list) else str(value)


# --------------------------------------------------------------------------------------------- notebook checks
def no_glue_in_markdown(nb) -> list[str]:
    """Markdown cells with a ``{glue`` role."""
    return [f"cell {i}: markdown uses a {{glue}} role, which only the book renders: {_snippet(c.source, m.start())}"
            for i, c in _cells(nb, "markdown") for m in GLUE.finditer(c.source)]


def no_nbval_comments(nb) -> list[str]:
    """Code cells with a ``# NBVAL_...`` comment (use the tag ``nbval-check-output``)."""
    return [f"cell {i}: '{m.group(0)}' comment in the source (use the cell tag nbval-check-output instead)"
            for i, c in _cells(nb, "code") for m in NBVAL_COMMENT.finditer(c.source)]


def setup_cell_removed(nb) -> list[str]:
    """The Colab set-up cell must exist and be tagged ``remove-cell``."""
    code = _cells(nb, "code")
    setup = [(i, c) for n, (i, c) in enumerate(code) if SETUP_TAG in _tags(c) or (n == 0 and "google.colab" in c.source)]
    if not setup:
        return ["no Colab set-up cell (tag lsutils-setup; write it with `python tools/setup_cell.py --write`)"]
    return [f"cell {i}: the Colab set-up cell is tagged {_tags(c)}, not 'remove-cell' (the book must not show it)"
            for i, c in setup if "remove-cell" not in _tags(c)]


def no_warnings_in_outputs(nb) -> list[str]:
    """stderr outputs that carry a warning."""
    found = []
    for i, c in _cells(nb, "code"):
        for name, text in _streams(c):
            m = WARNING.search(text) if name == "stderr" else None
            if m:
                line = text[text.rfind("\n", 0, m.start()) + 1:].split("\n", 1)[0]
                found.append(f"cell {i}: a warning in the committed stderr output: {line.strip()[:100]!r}")
    return found


def no_machine_paths_in_outputs(nb) -> list[str]:
    """Outputs whose text shows a path of the machine that ran them."""
    found = []
    for i, c in _cells(nb, "code"):
        for what, text in _output_texts(c):
            for path in MACHINE_PATHS:
                at = text.find(path)
                if at >= 0:
                    found.append(f"cell {i}: {what} output shows the machine path {path!r}: {_snippet(text, at)}")
                    break
    return found


def progress_bars_final_only(nb) -> list[str]:
    """Stream outputs that kept a progress bar's intermediate states (text before and after a ``\\r``)."""
    found = []
    for i, c in _cells(nb, "code"):
        for name, text in _streams(c):
            kept = [line for line in text.replace("\r\n", "\n").split("\n")
                    if sum(1 for part in line.split("\r") if part.strip()) > 1]
            if "\x1b[" in text:
                found.append(f"cell {i}: {name} holds terminal escape sequences (nested progress bars moving the "
                             f"cursor); re-run `make outputs` (tools/execute.py keeps only the final screen)")
            elif kept:
                states = sum(1 for part in kept[0].split("\r") if part.strip())
                found.append(f"cell {i}: {name} keeps {states} states of a progress bar on one line "
                             f"({len(kept)} such line(s)), e.g. {kept[0].split(chr(13))[-1].strip()[:60]!r}; "
                             f"re-run `make outputs` (tools/execute.py keeps only the final state)")
    return found


def _sections(nb) -> list[tuple[str, list[tuple[int, object, str]]]]:
    """The notebook cut at its ``#`` and ``##`` headings: ``[(heading, [(cell number, cell, markdown part)])]``.
    A markdown cell that holds several headings is split between them; code fences are not headings."""
    sections: list[tuple[str, list]] = [("", [])]
    for i, c in _cells(nb):
        if c.cell_type != "markdown":
            sections[-1][1].append((i, c, ""))
            continue
        part: list[str] = []
        fence = False
        for line in c.source.splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                fence = not fence
            m = None if fence else HEADING.match(line)
            if m and len(m.group(1)) <= 2:
                if part:
                    sections[-1][1].append((i, c, "\n".join(part)))
                sections.append((m.group(2), []))
                part = []
            else:
                part.append(line)
        if part:
            sections[-1][1].append((i, c, "\n".join(part)))
    return sections


def exercises_have_solutions(nb) -> list[str]:
    """``## Exercises`` needs ``## Solutions`` with a ``hide-cell`` code cell per numbered exercise."""
    sections = _sections(nb)
    exercises = [body for title, body in sections if re.fullmatch(r"Exercises", title, re.I)]
    if not exercises:
        return []
    text = "\n".join(md for body in exercises for _, _, md in body)
    n = sum(1 for line in text.splitlines() if NUMBERED_ITEM.match(line))
    n = n or sum(1 for line in text.splitlines() if EXERCISE_HEADING.match(line))
    solutions = [body for title, body in sections if re.fullmatch(r"Solutions", title, re.I)]
    if not solutions:
        return [f"'## Exercises' ({n} numbered) has no '## Solutions' section (one code cell tagged hide-cell "
                f"per exercise, printing its answer)"]
    cells = [c for body in solutions for _, c, _ in body if c.cell_type == "code"]
    hidden = [c for c in cells if "hide-cell" in _tags(c)]
    if len(hidden) < n:
        return [f"'## Solutions' has {len(hidden)} code cell(s) tagged hide-cell ({len(cells)} code cell(s) in all) "
                f"for {n} numbered exercise(s)"]
    return []


NOTEBOOK_CHECKS: dict[str, Check] = {
    f.__name__: f for f in (no_glue_in_markdown, no_nbval_comments, setup_cell_removed, no_warnings_in_outputs,
                            no_machine_paths_in_outputs, progress_bars_final_only, exercises_have_solutions)
}


# --------------------------------------------------------------------------------------------- the table of contents
def toc_numbered(toc: dict, root: Path = ROOT) -> list[str]:
    """Problems with the numbering of ``_toc.yml`` (given as parsed YAML): every chapter notebook must be numbered."""
    if (toc.get("defaults") or {}).get("numbered"):
        return []
    parts = toc.get("parts")
    if not parts:
        if (toc.get("options") or {}).get("numbered") or toc.get("numbered"):
            return []
        return ["_toc.yml: chapters are not numbered (add `options: {numbered: true}` or `defaults: {numbered: true}`)"]
    unnumbered = [part.get("caption", "?") for part in parts
                  if any((root / f"{ch['file']}.ipynb").exists() for ch in part.get("chapters", []))
                  and not part.get("numbered")]
    if not unnumbered:
        return []
    hint = " (a top-level `options: numbered` has no effect in a book with parts)" if (toc.get("options") or {}).get("numbered") else ""
    return [f"_toc.yml: parts with chapter notebooks are not numbered: {unnumbered}; add `numbered: true` to each "
            f"part, or `defaults: {{numbered: true}}` at the top{hint}"]


def check_notebook(path: Path) -> list[str]:
    """Every notebook check on one notebook, each problem prefixed with the file and the check's name."""
    nb = nbformat.read(path, as_version=4)
    return [f"{path.name}: [{name}] {problem}" for name, check in NOTEBOOK_CHECKS.items() for problem in check(nb)]


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv] or sorted((ROOT / "chapters").glob("*.ipynb"))
    problems = [p for path in paths for p in check_notebook(path)]
    if not argv:
        problems += toc_numbered(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s) in {len(paths)} notebook(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
