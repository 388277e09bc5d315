#!/usr/bin/env bash
# Set-up for `make book`, `make test` and `make lab`: a virtual environment at .venv/ with requirements.txt and
# lsutils (editable), and Fashion-MNIST on disk, so that the tests can then run with the network off.
#
#     bash tools/setup.sh           # full set-up; safe to re-run (make runs it when a requirements file changes)
#     bash tools/setup.sh --quick   # what `make setup` runs every time: nothing when .venv is healthy and set up
#                                   # (and the data is there); otherwise the full set-up
#     bash tools/setup.sh --check   # only report .venv's problems (exit 1), change nothing
#
# It fails loudly (non-zero exit, the failing step named) and never leaves a set-up stamp behind a failure.
#
# .venv is recreated when it is broken or foreign: its python does not run, is another major.minor than
# $PYTHON (default python3), has no pip, or belongs to another checkout (its scripts point elsewhere).
#
# Fashion-MNIST (tools/fetch_data.py): as root with apt, Debian's dataset-fashion-mnist is installed
# (/usr/share/datasets/fashion-mnist); otherwise, or if that fails, torchvision downloads it once into the
# data folder (data/FashionMNIST/raw, or $LSUTILS_DATA/FashionMNIST/raw).
#
# Environment: PYTHON (interpreter for a new .venv, default python3), VENV (default .venv),
# LSUTILS_DATA (data folder).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
case "$VENV" in /*) VENV_ABS=$VENV ;; *) VENV_ABS="$ROOT/$VENV" ;; esac
STAMP="$VENV/.lsutils-setup"
MODE=full
case "${1:-}" in
    "") ;;
    --quick) MODE=quick ;;
    --check) MODE=check ;;
    *) echo "usage: bash tools/setup.sh [--quick|--check]" >&2; exit 2 ;;
esac

die() { echo "ERROR (tools/setup.sh): $*" >&2; exit 1; }

# The major.minor that .venv must have: that of $PYTHON.
wanted_version() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON is not on PATH; install Python >= 3.9 or set PYTHON=/path/to/python3"
    local v
    v=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2]) if sys.version_info >= (3, 9) else sys.exit("Python >= 3.9 is needed, this is " + sys.version.split()[0])') \
        || die "$PYTHON cannot be used for .venv (see above)"
    echo "$v"
}

# Print what is wrong with $VENV (empty output: healthy). $1 = the wanted major.minor.
venv_problem() {
    local want=$1 have script first
    if [ ! -e "$VENV" ]; then echo "$VENV does not exist"; return; fi
    if [ -L "$VENV/bin/python" ] && [ ! -e "$VENV/bin/python" ]; then
        echo "$VENV/bin/python links to $(readlink "$VENV/bin/python"), which is gone (the Python it was made with moved or was removed)"
        return
    fi
    if [ ! -x "$VENV/bin/python" ]; then echo "$VENV/bin/python is missing"; return; fi
    if ! have=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
        echo "$VENV/bin/python does not run (its base interpreter moved or was removed?)"; return
    fi
    if [ "$have" != "$want" ]; then echo "$VENV has Python $have, but $PYTHON is $want"; return; fi
    if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then echo "$VENV has no working pip"; return; fi
    # a copy of another checkout's .venv: console scripts start with '#!<that checkout>/.venv/bin/python'
    for script in "$VENV/bin/pip" "$VENV/bin/jupyter"; do
        if [ -f "$script" ]; then
            first=$(head -n 1 "$script")
            case "$first" in
                "#!$VENV_ABS/bin/"*) ;;
                "#!/bin/sh") ;;  # pip writes a sh trampoline when the path is too long for a shebang
                *) echo "$script belongs to another environment (${first#\#!})"; return ;;
            esac
        fi
    done
}

# The data is there when Debian's files or the decompressed/downloaded raw files exist. This mirrors
# lsutils.data_root() for a checkout ($LSUTILS_DATA, else data/) so that --quick needs no Python start-up.
data_present() {
    local raw="${LSUTILS_DATA:-$ROOT/data}/FashionMNIST/raw" debian=/usr/share/datasets/fashion-mnist f
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        if [ ! -s "$raw/$f" ] && [ ! -s "$debian/$f.gz" ]; then return 1; fi
    done
}

make_venv() {
    local want=$1 problem
    problem=$(venv_problem "$want")
    [ -z "$problem" ] && return 0
    if [ -e "$VENV" ]; then
        echo "==> recreating $VENV: $problem"
        rm -rf "$VENV"
    fi
    echo "==> creating $VENV with $("$PYTHON" --version 2>&1) ($(command -v "$PYTHON"))"
    if ! "$PYTHON" -m venv "$VENV"; then
        rm -rf "$VENV"
        die "'$PYTHON -m venv $VENV' failed. On Debian/Ubuntu: sudo apt-get install python3-venv (or python$want-venv)"
    fi
    problem=$(venv_problem "$want")
    [ -z "$problem" ] || die "the new $VENV is not usable: $problem"
}

# pip's own noise that says nothing about this project (pip.conf's file: indexes that are absent here)
filter_pip() {
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            "WARNING: Location 'file:"*"' is ignored"*) ;;
            *) printf '%s\n' "$line" ;;
        esac
    done
}

install_requirements() {
    echo "==> installing requirements.txt and lsutils (editable) into $VENV (first time: several minutes)"
    local status
    set +e
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements.txt -e . 2>&1 | filter_pip
    status=${PIPESTATUS[0]}
    set -e
    [ "$status" = 0 ] || die "pip install -r requirements.txt -e . failed (exit $status); see pip's messages above"
    "$VENV/bin/python" - "$ROOT" <<'EOF' || die "$VENV cannot import lsutils and torch after pip install (see above)"
import pathlib, sys
import lsutils, torch
where = pathlib.Path(lsutils.__file__).resolve().parent
if where != pathlib.Path(sys.argv[1]) / "lsutils":
    sys.exit(f"lsutils is imported from {where}, not from this checkout ({sys.argv[1]}/lsutils)")
print(f"    lsutils {lsutils.__version__} ({where}) | torch {torch.__version__}")
EOF
}

fetch_data() {
    if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && ! data_present \
        && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing Debian's dataset-fashion-mnist (offline Fashion-MNIST)"
        if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null); then
            echo "    dataset-fashion-mnist could not be installed (not in this distribution's archive?);" \
                 "downloading Fashion-MNIST instead"
        fi
    fi
    echo "==> Fashion-MNIST"
    "$VENV/bin/python" tools/fetch_data.py \
        || die "Fashion-MNIST is needed by the tests and the book, and is neither installed nor downloadable (see above)"
}

want=$(wanted_version)
case "$MODE" in
    check)
        problem=$(venv_problem "$want")
        if [ -n "$problem" ]; then echo "$problem"; exit 1; fi
        echo "$VENV is healthy (Python $want)"
        exit 0
        ;;
    quick)
        problem=$(venv_problem "$want")
        if [ -z "$problem" ] && [ -f "$STAMP" ]; then
            data_present || fetch_data
            exit 0
        fi
        echo "==> set-up needed: ${problem:-$STAMP is missing}"
        ;;
esac

rm -f "$STAMP"
make_venv "$want"
install_requirements
fetch_data
touch "$STAMP"
echo "==> set-up done ($VENV, Python $want)"
