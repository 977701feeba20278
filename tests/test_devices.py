"""resolve_device: the one device rule."""

from __future__ import annotations

import pytest
import torch

from hsenet_search.devices import resolve_device
from hsenet_search.errors import HSENetError


def test_auto_picks_cuda_only_when_visible():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_bad_or_missing_devices_are_typed_errors():
    with pytest.raises(HSENetError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(HSENetError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
