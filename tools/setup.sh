#!/usr/bin/env bash
# One-time set-up used by `make book` and `make test`: a virtual environment at .venv/ with the
# requirements and lsutils (editable), plus the offline Fashion-MNIST files where this machine can
# install them (root + apt). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
echo "==> installing requirements.txt and lsutils into .venv (first time: several minutes)"
.venv/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt -e . 2>&1 \
    | grep -v "^WARNING: Location 'file:" || true
.venv/bin/python -c "import lsutils, torch; print('    lsutils', lsutils.__version__, '| torch', torch.__version__)"

# Offline data: Debian's dataset-fashion-mnist (lsutils falls back to torchvision's download otherwise).
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing Debian's dataset-fashion-mnist (offline Fashion-MNIST)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
            || echo "    could not install dataset-fashion-mnist; lsutils will try torchvision's download instead"
    else
        echo "==> note: Fashion-MNIST will be downloaded by torchvision on first use" \
             "(or run: sudo apt-get install dataset-fashion-mnist)"
    fi
fi
