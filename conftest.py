"""Repository-wide pytest set-up (unit tests and doctests; not the notebooks under nbval).

The library trains in bf16 where the CPU computes it natively (``lsutils.config.precision``). Numbers that tests compare
exactly must not depend on the machine that runs them, so unit tests and doctests run in float32
(``LSUTILS_PRECISION=fp32`` for the whole session, fixtures included); the tests of the bf16 path set
``LSUTILS_PRECISION=bf16`` themselves. Under nbval the notebooks keep the reader's default.
"""
from __future__ import annotations

import os


def pytest_configure(config):
    running_notebooks = getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False)
    if not running_notebooks:
        os.environ["LSUTILS_PRECISION"] = "fp32"
