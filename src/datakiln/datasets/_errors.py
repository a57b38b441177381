"""Failure modes specific to datasets and loaders.

These belong in :mod:`datakiln.errors` with the others; they live here until that module
(owned elsewhere) takes them, and are re-exported from :mod:`datakiln.datasets`.
"""

from __future__ import annotations

from datakiln.errors import DatakilnError


class RandomAccessError(DatakilnError, TypeError):
    """A dataset only supports iteration, but the caller needs to read samples by index."""


class SampleValidationError(DatakilnError, ValueError):
    """A sample failed :func:`~datakiln.datasets.validate_sample` where invalid samples raise."""
