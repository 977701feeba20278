"""Helpers shared by the CLI command modules."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Any

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON on stdout (machine-readable, no rich markup)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


class ReportText(str, Enum):
    """The report text an index embeds (``hsenet_search.data.resolve.REPORT_TEXTS``)."""

    findings = "findings"
    impression = "impression"
    findings_impression = "findings+impression"
