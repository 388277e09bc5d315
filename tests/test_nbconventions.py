"""Each check of ``tools/nbconventions.py`` on small hand-made notebooks: a notebook that follows CONTRIBUTING.md
passes every check, and each kind of breach is caught by its own check (and by no other), with the cell named.

``tests/test_book.py`` runs the same checks on the real chapters; these tests show that the checks are right.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("nbconventions", ROOT / "tools" / "nbconventions.py")
conv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv)

SETUP = ('import sys\n\nif "google.colab" in sys.modules:\n'
         '    %pip install -q "lsutils @ git+https://github.com/example/book"\n')
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def stream(text: str, name: str = "stdout"):
    return new_output("stream", name=name, text=text)


def good_notebook():
    """A chapter in miniature that follows every convention."""
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("# A chapter"),
        new_code_cell(SETUP, metadata={"tags": ["lsutils-setup", "remove-cell"]}, execution_count=1),
        new_markdown_cell("The question. Math: $p = \\mathrm{softmax}(z)$.\n\n## Results"),
        new_code_cell("print(ls.smooth_targets(y, 3, 0.1))", metadata={"tags": ["nbval-check-output"]},
                      execution_count=2, outputs=[stream("tensor([0.0333, 0.9333, 0.0333])\n")]),
        new_code_cell("runs = ls.train_runs(specs)", execution_count=3,
                      outputs=[stream("runs: 100%|##########| 6/6 [00:01<00:00]\n", "stderr"),
                               stream("6 models: 6 trained now\n")]),
        new_code_cell('ch.md(f"The gap is **{gap:.2f}**.")', metadata={"tags": ["remove-input"]}, execution_count=4,
                      outputs=[new_output("display_data", data={"text/markdown": "The gap is **2.20**.",
                                                                "text/plain": "<IPython.core.display.Markdown>"})]),
        new_code_cell("fig", execution_count=5,
                      outputs=[new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})]),
        new_markdown_cell("## Takeaways\n\n- one\n\n## Exercises\n\n1. **First.** Do this.\n   Then that.\n"
                          "2. **Second.** And\n\n   ```python\n   ## not a heading inside code\n   ```\n"),
        new_markdown_cell("## Solutions"),
        new_code_cell('ch.md("**1.** ...")', metadata={"tags": ["hide-cell"]}, execution_count=6),
        new_code_cell('ch.md("**2.** ...")', metadata={"tags": ["hide-cell"]}, execution_count=7),
    ]
    return nb


def failing(nb) -> dict[str, list[str]]:
    return {name: found for name, check in conv.NOTEBOOK_CHECKS.items() if (found := check(nb))}


def test_a_notebook_that_follows_the_conventions_passes_every_check(tmp_path):
    nb = good_notebook()
    path = tmp_path / "good.ipynb"
    nbformat.write(nb, path)  # also a valid notebook on disk
    assert failing(nbformat.read(path, as_version=4)) == {}
    assert conv.check_notebook(path) == []
    assert conv.main([str(path)]) == 0


def breach(kind: str):
    """``good_notebook()`` with one kind of breach; returns the notebook and the cell number (1-based) it is in."""
    nb = good_notebook()
    if kind == "no_glue_in_markdown":
        nb.cells[2].source += "\nThe gap is {glue:text}`gap:.2f`."
        return nb, 3
    if kind == "no_nbval_comments":
        nb.cells[3].source = "# NBVAL_CHECK_OUTPUT\n" + nb.cells[3].source
        return nb, 4
    if kind == "setup_cell_removed":
        nb.cells[1].metadata["tags"] = ["lsutils-setup", "hide-cell"]
        return nb, 2
    if kind == "no_warnings_in_outputs":
        nb.cells[4].outputs.insert(0, stream("model.py:12: UserWarning: the thing is deprecated\n"
                                             "  warnings.warn(\n", "stderr"))
        return nb, 5
    if kind == "no_machine_paths_in_outputs":
        nb.cells[3].outputs.append(stream("saved to /home/ana/book/data/cache/x.pt\n"))
        return nb, 4
    if kind == "progress_bars_final_only":
        nb.cells[4].outputs[0] = stream("runs:   0%|          | 0/6\rruns:  50%|#####     | 3/6\r"
                                        "runs: 100%|##########| 6/6 [00:01<00:00]\n", "stderr")
        return nb, 5
    if kind == "exercises_have_solutions":
        nb.cells[10].metadata["tags"] = []  # one solution cell not folded
        return nb, None
    raise ValueError(kind)


@pytest.mark.parametrize("kind", list(conv.NOTEBOOK_CHECKS))
def test_each_breach_is_caught_by_its_own_check_only(kind):
    nb, cell = breach(kind)
    found = failing(nb)
    assert list(found) == [kind], f"{kind}: expected only this check to fail, got {found}"
    if cell is not None:
        assert all(p.startswith(f"cell {cell}:") for p in found[kind]), found[kind]


def test_glue_check_quotes_the_role_and_counts_each():
    nb = good_notebook()
    nb.cells[2].source = "A {glue:text}`a` and a {glue}`b`."
    found = conv.no_glue_in_markdown(nb)
    assert len(found) == 2 and "{glue:text}`a`" in found[0]


def test_glue_in_code_is_not_a_markdown_breach():
    nb = good_notebook()
    nb.cells[5].source = 'ls.glue("gap", gap)  # {glue} in code is fine'
    assert conv.no_glue_in_markdown(nb) == []


def test_missing_setup_cell_is_reported():
    nb = good_notebook()
    del nb.cells[1]
    assert conv.setup_cell_removed(nb) == [
        "no Colab set-up cell (tag lsutils-setup; write it with `python tools/setup_cell.py --write`)"]


def test_warnings_only_count_on_stderr_and_logging_warnings_count():
    nb = good_notebook()
    nb.cells[3].outputs = [stream("Warning: this is just stdout text\n")]
    assert conv.no_warnings_in_outputs(nb) == []
    nb.cells[3].outputs = [stream("WARNING:root:cache miss\n", "stderr")]
    assert len(conv.no_warnings_in_outputs(nb)) == 1


@pytest.mark.parametrize("where", ["stream", "error", "html", "json"])
def test_machine_paths_are_found_in_every_text_output(where):
    nb = good_notebook()
    path = "/usr/lib/python3/site-packages/torch/nn/functional.py"
    out = {"stream": stream(f"in {path}\n", "stderr"),
           "error": new_output("error", ename="ValueError", evalue="bad", traceback=[f"File {path}, line 3"]),
           "html": new_output("display_data", data={"text/html": f"<p>{path}</p>", "text/plain": "x"}),
           "json": new_output("display_data", data={"application/json": {"file": path}, "text/plain": "x"})}[where]
    nb.cells[3].outputs = [out]
    assert len(conv.no_machine_paths_in_outputs(nb)) == 1


def test_machine_path_check_ignores_image_data():
    nb = good_notebook()
    nb.cells[6].outputs[0].data["image/png"] = "AAAA/tmp/AAAA/work/AAAA"  # base64 can spell anything
    assert conv.no_machine_paths_in_outputs(nb) == []


@pytest.mark.parametrize("text, ok", [
    ("runs: 100%|###| 3/3\n", True),                                    # final state only
    ("\rruns: 100%|###| 3/3\n", True),                                  # a leading \r overwrites nothing
    ("line one\r\nline two\r\n", True),                                 # Windows newlines are newlines
    ("runs:  33%|#  | 1/3\rruns: 100%|###| 3/3\n", False),              # an intermediate state kept
    ("a\r", True),                                                      # \r with nothing after it
])
def test_progress_bar_states(text, ok):
    nb = good_notebook()
    nb.cells[4].outputs = [stream(text, "stderr")]
    assert (conv.progress_bars_final_only(nb) == []) is ok


def test_progress_bar_written_in_pieces_is_merged_before_checking():
    nb = good_notebook()
    nb.cells[4].outputs = [stream("runs:  50%|#  | 1/2", "stderr"), stream("\rruns: 100%|###| 2/2\n", "stderr")]
    assert len(conv.progress_bars_final_only(nb)) == 1


def test_exercises_without_solutions_section():
    nb = good_notebook()
    del nb.cells[8:]
    assert conv.exercises_have_solutions(nb) == [
        "'## Exercises' (2 numbered) has no '## Solutions' section (one code cell tagged hide-cell per exercise, "
        "printing its answer)"]


def test_exercises_as_headings_and_solutions_in_the_same_cell():
    nb = good_notebook()
    nb.cells[7].source = "## Exercises\n\n### Exercise 1\nDo.\n\n### Exercise 2\nDo.\n\n### Exercise 3\nDo.\n"
    found = conv.exercises_have_solutions(nb)
    assert found == ["'## Solutions' has 2 code cell(s) tagged hide-cell (2 code cell(s) in all) for 3 numbered "
                     "exercise(s)"]
    nb.cells[7].source += "\n## Solutions\n"  # a Solutions heading in the same cell still opens the section
    del nb.cells[8]
    nb.cells.append(new_code_cell("3", metadata={"tags": ["hide-cell"]}))
    assert conv.exercises_have_solutions(nb) == []


def test_a_chapter_without_exercises_needs_no_solutions():
    nb = good_notebook()
    del nb.cells[7:]
    assert conv.exercises_have_solutions(nb) == []


def _toc(tmp_path, **top):
    (tmp_path / "chapters").mkdir(exist_ok=True)
    for name in ("a", "b"):
        nbformat.write(good_notebook(), tmp_path / "chapters" / f"{name}.ipynb")
    (tmp_path / "chapters" / "bib.md").write_text("# Bibliography\n")
    toc = {"format": "jb-book", "root": "chapters/intro",
           "parts": [{"caption": "One", "chapters": [{"file": "chapters/a"}]},
                     {"caption": "Two", "chapters": [{"file": "chapters/b"}]},
                     {"caption": "Back matter", "chapters": [{"file": "chapters/bib"}]}]}
    toc.update(top)
    return toc


def test_toc_numbering(tmp_path):
    toc = _toc(tmp_path)
    found = conv.toc_numbered(toc, tmp_path)
    assert len(found) == 1 and "['One', 'Two']" in found[0]
    assert "has no effect" in conv.toc_numbered(_toc(tmp_path, options={"numbered": True}), tmp_path)[0]
    assert conv.toc_numbered(_toc(tmp_path, defaults={"numbered": True}), tmp_path) == []
    for part in toc["parts"][:2]:  # the back matter (no notebook) may stay unnumbered
        part["numbered"] = True
    assert conv.toc_numbered(toc, tmp_path) == []
    flat = {"format": "jb-book", "root": "chapters/intro", "chapters": [{"file": "chapters/a"}]}
    assert conv.toc_numbered(flat, tmp_path) and conv.toc_numbered({**flat, "options": {"numbered": True}}, tmp_path) == []


def test_command_line_lists_problems_and_fails(tmp_path, capsys):
    nb, _ = breach("no_nbval_comments")
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    assert conv.main([str(path)]) == 1
    out = capsys.readouterr()
    assert "bad.ipynb: [no_nbval_comments] cell 4: '# NBVAL_CHECK_OUTPUT' comment" in out.out
    assert "1 problem(s) in 1 notebook(s)" in out.err


def test_nested_progress_bars_with_cursor_moves_are_caught():
    cell = new_code_cell("train()")
    cell.outputs = [new_output("stream", name="stderr", text="runs 1/2\n\r run 50%\x1b[A\rruns 2/2\n")]
    found = conv.progress_bars_final_only(new_notebook(cells=[cell]))
    assert len(found) == 1 and "escape" in found[0]
