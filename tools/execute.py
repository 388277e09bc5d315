r"""Execute chapter notebooks in place and report how long each took (what `make outputs` runs).

    python tools/execute.py                       # every chapter, profile from $LSUTILS_PROFILE (default: cpu)
    python tools/execute.py chapters/03_*.ipynb   # some chapters
    python tools/execute.py --runs DIR ...        # the chapters' run logs into DIR (default _build/runs/)

Each notebook runs in its own kernel from the ``chapters/`` folder, in order, with nbclient; a failing cell stops
the run with the cell's error. Before a notebook is written back, its stream outputs are normalised the way a
terminal shows them (:func:`normalise_streams`): of a progress bar redrawn with ``\r`` only the final state
remains, and streams left empty are dropped (CONTRIBUTING.md, "Quiet pages"). The last lines printed are a table
of seconds per chapter and the total, the numbers the README quotes for "the whole book on this machine".

Each chapter's kernel runs with ``LSUTILS_RUN_LOG=<runs>/<chapter>.jsonl`` (the file is emptied first): one JSON line
per model the chapter trains or loads (``lsutils.train.read_run_log``), which ``tools/gpu_plan.py`` reads to plan the
``gpu`` profile's time per chapter (``make gpu-plan``).
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


_ESCAPE = re.compile(r"\x1b\[(\d*)([A-Za-z])")


def terminal_text(text: str) -> str:
    r"""``text`` as a terminal shows it, so that a progress bar keeps only its final state.

    A small screen: ``\n`` starts the next line, a lone ``\r`` returns to the start of the line (what follows
    overwrites what was there), ``ESC[nA`` moves up ``n`` lines (nested tqdm bars redraw the line above this way),
    other escape sequences are dropped. Trailing blanks are removed, and so are redrawn lines left empty (a bar with
    ``leave=False`` erases itself with spaces); blank lines that were printed as such stay.

    >>> terminal_text("\r  0%|   | 0/3\r 67%|## | 2/3\r100%|###| 3/3\n")
    '100%|###| 3/3\n'
    >>> terminal_text("abcdef\rXY\nplain\r\n")
    'XYcdef\nplain\n'
    >>> terminal_text("runs 0/2\n\r run a 50%\x1b[A\rruns 1/2\n\r          \x1b[A\rruns 2/2\n")
    'runs 2/2\n'
    """
    screen: list[str] = [""]
    redrawn: set[int] = set()           # rows a carriage return or a cursor move came back to
    row = col = 0
    pos = 0
    text = text.replace("\r\n", "\n")
    while pos < len(text):
        m = _ESCAPE.match(text, pos)
        if m:
            if m.group(2) == "A":
                row = max(0, row - int(m.group(1) or 1))
                redrawn.add(row)
            pos = m.end()
            continue
        ch = text[pos]
        pos += 1
        if ch == "\n":
            row, col = row + 1, 0
            if row == len(screen):
                screen.append("")
        elif ch == "\r":
            col = 0
            redrawn.add(row)
        elif ch == "\x1b":
            continue
        else:
            line = screen[row]
            line = line.ljust(col)
            screen[row] = line[:col] + ch + line[col + 1:]
            col += 1
    trailing = text.endswith("\n")
    if trailing and screen[-1] == "":
        screen.pop()                    # the line after the final newline: not a line of output
    kept = [line.rstrip() for r, line in enumerate(screen) if line.strip() or r not in redrawn]
    return "\n".join(kept) + ("\n" if kept and trailing else "")


def normalise_streams(nb) -> int:
    """Normalise every code cell's stream outputs in place, as a terminal shows them; returns how many outputs changed.

    Consecutive outputs of the same stream are merged first (a progress bar is often written in many pieces), each
    stream's text goes through :func:`terminal_text`, and a stream whose text is then empty is dropped.
    """
    changed = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            prev = outputs[-1] if outputs else None
            if (out.output_type == "stream" and prev is not None and prev.output_type == "stream"
                    and prev.name == out.name):
                prev.text += out.text
                changed += 1
            else:
                outputs.append(out)
        kept = []
        for out in outputs:
            if out.output_type == "stream":
                text = terminal_text(out.text)
                if text != out.text:
                    out.text = text
                    changed += 1
                if not text.strip():
                    changed += 1
                    continue
            kept.append(out)
        cell.outputs = kept
    return changed


RUN_LOG_ENV_VAR = "LSUTILS_RUN_LOG"       # lsutils.train.RUN_LOG_ENV_VAR (not imported: this tool needs no torch)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str]) -> int:
    args = list(argv)
    runs = ROOT / "_build" / "runs"
    if "--runs" in args:
        i = args.index("--runs")
        if i + 1 >= len(args):
            print("--runs needs a folder", file=sys.stderr)
            return 2
        runs = Path(args[i + 1]).resolve()
        del args[i:i + 2]
    os.environ.setdefault("LSUTILS_PROFILE", "cpu")
    notebooks = [Path(p).resolve() for p in args] or sorted((ROOT / "chapters").glob("*.ipynb"))
    runs.mkdir(parents=True, exist_ok=True)
    times = []
    for path in notebooks:
        print(f"==> {_shown(path)} (LSUTILS_PROFILE={os.environ['LSUTILS_PROFILE']})", flush=True)
        nb = nbformat.read(path, as_version=4)
        log = runs / f"{path.stem}.jsonl"
        log.write_text("")
        os.environ[RUN_LOG_ENV_VAR] = str(log)          # the kernel inherits it: the chapter's run list
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds = time.perf_counter() - t0
        cleaned = normalise_streams(nb)
        nbformat.write(nb, path)
        times.append((path.name, seconds))
        n_runs = sum(1 for line in log.read_text().splitlines() if line.strip())
        print(f"    {seconds:.1f} s" + (f" ({cleaned} stream outputs normalised: progress bars, empty streams)"
                                      if cleaned else "") + f"; run log {_shown(log)}: {n_runs} lines", flush=True)
    width = max(len(n) for n, _ in times)
    print("\nchapter".ljust(width + 1), "seconds")
    for name, seconds in times:
        print(name.ljust(width), f"{seconds:7.1f}")
    print("total".ljust(width), f"{sum(s for _, s in times):7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
