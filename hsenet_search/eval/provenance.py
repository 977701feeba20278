"""What every benchmark result records: the machine, its load, library versions, the command line,
repeats and their spread; results are written atomically (hsenet_search.atomic).

    started = run_started()                 # load average before the work
    ... time the work ``repeats`` times ...
    write_result(path, {"benchmark": ..., "seconds": spread(times), ...}, started, repeats=repeats)

The load average matters: benchmarks here often run on a machine shared with other jobs, and a high load
means the numbers are slower and noisier than on a quiet machine.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from statistics import median
from typing import Any

from hsenet_search.atomic import write_json

_PACKAGES = ("hsenet-search", "torch", "numpy", "monai", "faiss-gpu", "faiss-cpu", "transformers", "nibabel")


@dataclass(frozen=True)
class RunStart:
    """The load average and command line captured when a benchmark starts."""

    load_average: tuple[float, float, float]
    command: list[str] = field(default_factory=lambda: list(sys.argv))


def load_average() -> tuple[float, float, float]:
    """1, 5 and 15-minute load averages (zeros where the OS has none)."""
    try:
        return tuple(round(v, 2) for v in os.getloadavg())  # type: ignore[return-value]
    except (AttributeError, OSError):
        return (0.0, 0.0, 0.0)


def run_started() -> RunStart:
    """Capture the load average and command line at the start of a benchmark."""
    return RunStart(load_average())


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str | None = None) -> dict[str, Any]:
    """CPU model, cores, torch threads, memory, and the GPU when ``device`` is CUDA."""
    info: dict[str, Any] = {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "platform": platform.platform()}
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch_threads"] = torch.get_num_threads()
        if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    info["device"] = str(device) if device is not None else "cpu"
    return info


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages a result depends on."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def spread(values: list[float] | tuple[float, ...], digits: int = 6) -> dict[str, Any]:
    """Median with min and max of repeated measurements (and the values themselves)."""
    if not values:
        raise ValueError("spread of no values")
    return {
        "median": round(median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
        "values": [round(v, digits) for v in values],
    }


def run_record(started: RunStart, device: str | None = None, repeats: int | None = None) -> dict[str, Any]:
    """Machine, load at start and end, versions, command line and repeats of a run."""
    record = {
        "machine": {
            **machine_info(device),
            "load_average": {
                "start": list(started.load_average),
                "end": list(load_average()),
                "note": "1/5/15-min load; above the core count the machine was "
                "shared with other work and timings are pessimistic",
            },
        },
        "versions": versions(),
        "command": " ".join(started.command),
    }
    if repeats is not None:
        record["repeats"] = repeats
    return record


def write_result(
    path: str | Path,
    payload: dict[str, Any],
    started: RunStart,
    *,
    device: str | None = None,
    repeats: int | None = None,
) -> Path:
    """Write a benchmark result with its run record (machine, load, versions, command, repeats)."""
    return write_json(path, {**payload, **run_record(started, device, repeats)})
