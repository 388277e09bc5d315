"""Fixtures and the report header of the browser tests; the code lives in ``browserkit.py`` (importable by the tests)."""
from browserkit import browser, pytest_report_header  # noqa: F401  (pytest finds fixtures and hooks by name)
