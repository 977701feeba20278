"""Typed, user-facing errors.

Every error a user can cause (bad file, bad CSV, mismatched model, bad query) is an
``HSENetError``: its message is one line that names the file (when there is one) and
the problem. The CLI prints it without a traceback and exits non-zero.
"""

from __future__ import annotations

from pathlib import Path


class HSENetError(Exception):
    """Base class for errors caused by user input."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.problem = " ".join(str(problem).split())
        self.path = str(path) if path is not None else None
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}" if self.path else self.problem


class VolumeError(HSENetError):
    """A CT volume (NIfTI, DICOM series, npy) cannot be read or is not a valid 3D CT."""


class DatasetError(HSENetError):
    """A dataset directory, CSV or manifest is malformed or incomplete."""


class ModelError(HSENetError):
    """A model directory or checkpoint is missing, malformed or does not match."""


class IndexFormatError(HSENetError):
    """An index directory is missing, half-written or malformed."""


class IndexMismatchError(HSENetError):
    """A model does not match the index it is used with (fingerprint, preprocessing, dims)."""


class QueryError(HSENetError):
    """A search or generation query is invalid (empty text, k out of range, ...)."""
