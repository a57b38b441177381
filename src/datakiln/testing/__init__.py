"""Helpers for tests: conformance suites and corpus builders.

``DatasetTests`` (a pytest suite) loads on first use, so the corpus builders work where pytest
is not installed (the demo in the Docker image uses them).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DatasetTests"]


def __getattr__(name: str) -> Any:
    if name == "DatasetTests":
        from datakiln.datasets.testing import DatasetTests

        return DatasetTests
    raise AttributeError(f"module 'datakiln.testing' has no attribute {name!r}")
