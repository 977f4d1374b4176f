"""Shared test setup: offline, one persistent inductor cache, small thread pools."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Offline before timm/huggingface_hub are imported: a pretrained lookup fails in ~0.3 s, not ~50 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One inductor cache for every test run, so compile tests pay the cold compile once per machine.
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / "okc-test-inductor-cache")
)

import pytest
import torch

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _okc_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep okc's cache (data, logs) out of the user's home during tests."""
    home = tmp_path_factory.mktemp("okc-home")
    monkeypatch.setenv("OKC_HOME", str(home))
    return home
