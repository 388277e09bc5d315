"""The project's tools: set-up (``tools/setup.sh``), network isolation (``tools/netoff.sh``), the one-time
Fashion-MNIST download (``tools/fetch_data.py``), the stream normalisation of ``tools/execute.py`` and the Colab
set-up cell writer (``tools/setup_cell.py``).

The shell tools run for real on fake virtual environments and a fake ``unshare``; nothing here installs a package
or uses the network (the download is replaced by a writer of small IDX files, as in ``test_data.py``).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lsutils import data as lsdata

ROOT = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash")
WANT = "%d.%d" % sys.version_info[:2]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(cmd, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, **kw)


# --------------------------------------------------------------------------------------------- tools/setup.sh
def fake_venv(folder: Path, body: str) -> Path:
    """A folder that looks like a venv whose ``bin/python`` is the shell script ``body``."""
    (folder / "bin").mkdir(parents=True)
    python = folder / "bin" / "python"
    python.write_text("#!/bin/sh\n" + body)
    python.chmod(0o755)
    return folder


def check(venv_dir: Path) -> subprocess.CompletedProcess:
    return run([BASH, "tools/setup.sh", "--check"], env={"VENV": str(venv_dir), "PYTHON": sys.executable})


def test_setup_check_accepts_a_healthy_venv(tmp_path):
    venv.create(tmp_path / "ok", with_pip=False, symlinks=True)
    # pip is what --check asks for: a stand-in module keeps this test offline and fast
    site = next((tmp_path / "ok" / "lib").glob("python*/site-packages"))
    (site / "pip").mkdir()
    (site / "pip" / "__main__.py").write_text("print('pip 0.0 (stand-in)')\n")
    (site / "pip" / "__init__.py").write_text("")
    result = check(tmp_path / "ok")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"is healthy (Python {WANT})" in result.stdout


@pytest.mark.parametrize("case, expect", [
    ("missing", "does not exist"),
    ("dangling", "which is gone"),
    ("broken", "does not run"),
    ("other-python", "has Python 2.7, but"),
    ("no-pip", "has no working pip"),
    ("foreign", "belongs to another environment (/elsewhere/.venv/bin/python)"),
])
def test_setup_check_names_what_is_wrong_with_a_venv(tmp_path, case, expect):
    target = tmp_path / "venv"
    if case == "dangling":
        (target / "bin").mkdir(parents=True)
        (target / "bin" / "python").symlink_to(tmp_path / "gone" / "python3")
    elif case == "broken":
        fake_venv(target, "exit 127\n")
    elif case == "other-python":
        fake_venv(target, 'echo 2.7\n')
    elif case == "no-pip":
        venv.create(target, with_pip=False, symlinks=True)
    elif case == "foreign":
        fake_venv(target, f'case "$1" in -c) exec "{sys.executable}" "$@";; esac\necho "pip 0.0"\n')
        (target / "bin" / "pip").write_text("#!/elsewhere/.venv/bin/python\n")
    result = check(target)
    assert result.returncode == 1 and expect in result.stdout, result.stdout + result.stderr


def test_setup_fails_loudly_when_pip_fails_and_leaves_no_stamp(tmp_path):
    """A healthy-looking venv whose pip install fails: set-up must stop with pip's status, show pip's error, hide
    pip's 'Location file:' noise, and write no stamp (so `make` cannot take the set-up for done)."""
    target = fake_venv(tmp_path / "venv", f'''
if [ "$1" = -m ] && [ "$2" = pip ]; then
    if [ "$3" = --version ]; then echo "pip 0.0 (fake)"; exit 0; fi
    echo "WARNING: Location 'file:///opt/nowhere/simple' is ignored: it is neither a file nor a directory."
    echo "ERROR: No matching distribution found for torch>=99"
    exit 7
fi
exec "{sys.executable}" "$@"
''')
    (target / ".lsutils-setup").write_text("")  # a stamp from an earlier run must not survive a failed one
    result = run([BASH, "tools/setup.sh"], env={"VENV": str(target), "PYTHON": sys.executable})
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "ERROR: No matching distribution found for torch>=99" in out
    assert "failed (exit 7)" in out
    assert "Location 'file:" not in out
    assert not (target / ".lsutils-setup").exists()


def test_setup_refuses_an_unknown_python(tmp_path):
    result = run([BASH, "tools/setup.sh", "--check"], env={"PYTHON": "no-such-python3.99"})
    assert result.returncode == 1 and "PYTHON=no-such-python3.99 is not on PATH" in result.stderr


# --------------------------------------------------------------------------------------------- tools/netoff.sh
def fake_path(tmp_path: Path, unshare_body: str) -> str:
    """A PATH whose ``unshare`` is the shell script ``unshare_body`` (and ``ip`` does nothing)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in (("unshare", unshare_body), ("ip", "exit 0\n")):
        (bindir / name).write_text("#!/bin/sh\n" + body)
        (bindir / name).chmod(0o755)
    return f"{bindir}:{os.environ['PATH']}"


def test_netoff_fails_loudly_when_it_cannot_isolate(tmp_path):
    path = fake_path(tmp_path, 'echo "unshare: unshare failed: Operation not permitted" >&2; exit 1\n')
    result = run(["tools/netoff.sh", "echo", "RAN"], env={"PATH": path, "LSUTILS_ALLOW_NETWORK": ""})
    assert result.returncode == 3, result.stdout + result.stderr
    assert "RAN" not in result.stdout
    assert "cannot switch the network off" in result.stderr and "LSUTILS_ALLOW_NETWORK=1" in result.stderr


def test_netoff_runs_with_the_network_only_when_allowed_explicitly(tmp_path):
    path = fake_path(tmp_path, "exit 1\n")
    result = run(["tools/netoff.sh", "sh", "-c", "echo RAN network=$LSUTILS_NETWORK"],
                 env={"PATH": path, "LSUTILS_ALLOW_NETWORK": "1"})
    assert result.returncode == 0 and "RAN network=on" in result.stdout
    assert "runs WITH the network on" in result.stderr


def test_netoff_needs_a_command():
    assert run(["tools/netoff.sh"]).returncode == 2


def test_netoff_leaves_only_loopback():
    """For real: inside, the only interface is loopback, it is up, and the exit status is the command's."""
    probe = ("import socket, subprocess, sys\n"
             "links = subprocess.run(['ip', '-o', 'link'], capture_output=True, text=True).stdout\n"
             "names = sorted(l.split(':')[1].strip().split('@')[0] for l in links.splitlines())\n"
             "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); c = socket.create_connection(s.getsockname())\n"
             "print('links', names); sys.exit(5)\n")
    result = run(["tools/netoff.sh", sys.executable, "-c", probe], env={"LSUTILS_ALLOW_NETWORK": ""})
    if result.returncode == 3:
        pytest.fail("network isolation is not possible on this machine (tools/netoff.sh says why):\n" + result.stderr)
    assert result.returncode == 5, result.stdout + result.stderr
    assert "links ['lo']" in result.stdout


# --------------------------------------------------------------------------------------------- tools/fetch_data.py
@pytest.fixture
def fetch(tmp_data_root, tmp_path, monkeypatch, write_idx):
    """tools/fetch_data.py with no Debian copy and a download replaced by a writer of small IDX files."""
    tool = load_tool("fetch_data")
    monkeypatch.setattr(lsdata, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    calls = []

    def fake_download(root):
        calls.append(root)
        raw = root / "FashionMNIST" / "raw"
        for gz in write_idx(tmp_path / "idx").iterdir():
            import gzip
            raw.mkdir(parents=True, exist_ok=True)
            (raw / gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))

    monkeypatch.setattr(lsdata, "_download_fashion_mnist", fake_download)
    return tool, calls


def test_fetch_data_downloads_once_and_says_so(fetch, tmp_data_root, capsys):
    tool, calls = fetch
    assert tool.main(["--check"]) == 1 and calls == []  # --check never downloads
    assert "no offline copy" in capsys.readouterr().err
    assert tool.main([]) == 0 and len(calls) == 1
    assert "downloaded by torchvision into" in capsys.readouterr().out
    assert tool.has_raw_files(tmp_data_root / "FashionMNIST" / "raw")
    lsdata._clear_cache()
    assert tool.main([]) == 0 and len(calls) == 1  # once: the second run finds the files
    assert "already in" in capsys.readouterr().out
    assert tool.main(["--check"]) == 0


def test_fetch_data_reports_a_failed_download(fetch, monkeypatch, capsys):
    tool, _ = fetch

    def offline(root):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(lsdata, "_download_fashion_mnist", offline)
    assert tool.main([]) == 1
    err = capsys.readouterr().err
    assert "could not be made available" in err and "Temporary failure in name resolution" in err


def test_fetch_data_prefers_debian_files_to_a_download(tmp_data_root, fake_fashion_mnist_debian, monkeypatch, capsys):
    tool = load_tool("fetch_data")
    monkeypatch.setattr(lsdata, "_download_fashion_mnist", lambda root: pytest.fail("must not download"))
    assert tool.main([]) == 0
    assert "Debian's dataset-fashion-mnist" in capsys.readouterr().out
    assert tool.has_raw_files(tmp_data_root / "FashionMNIST" / "raw")  # decompressed into the data folder


# --------------------------------------------------------------------------------------------- tools/execute.py
def test_execute_normalises_streams_like_a_terminal():
    tool = load_tool("execute")
    nb = new_notebook(cells=[
        new_markdown_cell("# T"),
        new_code_cell("train()", outputs=[
            new_output("stream", name="stderr", text="runs:   0%|   | 0/3"),
            new_output("stream", name="stderr", text="\rruns:  67%|## | 2/3\rruns: 100%|###| 3/3   \n"),
            new_output("stream", name="stdout", text="3 models\n"),
            new_output("stream", name="stderr", text="\r"),  # empty once applied: dropped
            new_output("display_data", data={"text/plain": "x"}),
        ]),
        new_code_cell("print('a\\r\\nb')", outputs=[new_output("stream", name="stdout", text="a\r\nb\n")]),
    ])
    assert tool.normalise_streams(nb) > 0
    outs = nb.cells[1].outputs
    assert [(o.output_type, o.get("name"), o.get("text")) for o in outs] == [
        ("stream", "stderr", "runs: 100%|###| 3/3\n"), ("stream", "stdout", "3 models\n"),
        ("display_data", None, None)]
    assert nb.cells[2].outputs[0].text == "a\nb\n"
    nbformat.validate(nb)
    conventions = load_tool("nbconventions")
    assert conventions.progress_bars_final_only(nb) == []
    assert tool.normalise_streams(nb) == 0  # idempotent


# --------------------------------------------------------------------------------------------- tools/setup_cell.py
def test_setup_cell_write_tags_remove_cell_in_place(tmp_path, monkeypatch):
    tool = load_tool("setup_cell")
    old = new_code_cell("# an older set-up cell\n", metadata={"tags": ["lsutils-setup", "hide-cell"]})
    nb = new_notebook(cells=[new_markdown_cell("# T"), old, new_code_cell("x = 1")])
    fresh = new_notebook(cells=[new_markdown_cell("# U"), new_code_cell("y = 2")])
    paths = [tmp_path / "a.ipynb", tmp_path / "b.ipynb"]
    nbformat.write(nb, paths[0])
    nbformat.write(fresh, paths[1])
    monkeypatch.setattr(tool, "chapter_notebooks", lambda: paths)
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    monkeypatch.setattr(tool, "repository_url", lambda: "https://github.com/example/book")
    tool.write()
    a, b = (nbformat.read(p, as_version=4) for p in paths)
    assert a.cells[1].id == old.id and a.cells[1].source == tool.cell_source()
    assert a.cells[1].metadata.tags == ["lsutils-setup", "remove-cell"]
    assert b.cells[1].source == tool.cell_source() and b.cells[1].metadata.tags == ["lsutils-setup", "remove-cell"]
    before = [p.read_text() for p in paths]
    tool.write()  # already canonical: untouched
    assert [p.read_text() for p in paths] == before
    conventions = load_tool("nbconventions")
    assert conventions.setup_cell_removed(a) == [] and conventions.setup_cell_removed(b) == []


# --------------------------------------------------------------------------------------------- CI
def test_github_workflow_runs_make_test_on_push_and_pull_request():
    import yaml

    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    triggers = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert {"push", "pull_request"} <= set(triggers)
    steps = [s for job in flow["jobs"].values() for s in job["steps"]]
    assert any(s.get("run", "").strip() == "make test" for s in steps), "the workflow must run exactly `make test`"
    runs = [s for job in flow["jobs"].values() for s in job["steps"] if s.get("run", "").strip() == "make test"]
    assert {"CHROME_BIN", "CHROMEDRIVER"} <= set(runs[0].get("env", {})), "the browser tests must find Chrome"


def test_execute_writes_each_chapters_run_log(tmp_path, monkeypatch):
    """tools/execute.py runs each notebook with LSUTILS_RUN_LOG=<runs>/<chapter>.jsonl (emptied first)."""
    tool = load_tool("execute")
    nb = new_notebook(cells=[new_code_cell(
        "import torch, torch.nn.functional as F, lsutils as ls\n"
        "m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))\n"
        "h = ls.fit(m, torch.randn(16, 1, 2, 2), torch.arange(16) % 2, F.cross_entropy, epochs=2, batch_size=8,\n"
        "           lr=1e-2, device='cpu', progress=False)")])
    path = tmp_path / "07_tiny.ipynb"
    nbformat.write(nb, path)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "07_tiny.jsonl").write_text('{"stale": true}\n')
    monkeypatch.setenv("LSUTILS_PROFILE", "smoke")
    monkeypatch.setenv("LSUTILS_RUN_LOG", "")          # main() sets it for the kernels: restored after the test
    assert tool.main(["--runs", str(runs), str(path)]) == 0
    from lsutils.train import read_run_log

    (record,) = read_run_log(runs / "07_tiny.jsonl")
    assert record["kind"] == "fit" and record["profile"] == "smoke"
    assert record["fits"][0]["epochs"] == 2 and record["fits"][0]["n_train"] == 16
