"""Which torch device to run on: the one rule every command and library entry point uses."""

from __future__ import annotations

import torch

from hsenet_search.errors import HSENetError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): CUDA when a GPU is visible, else the CPU; otherwise the named torch device."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise HSENetError(f"unknown device {name!r} (expected auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HSENetError(f"device {name!r} asked for, but no CUDA GPU is visible")
    return device
