"""Default locations: everything okc writes by default lives under one cache folder.

``OKC_HOME`` moves it (tests point it at a temporary folder); default ``~/.cache/okc``.
"""

from __future__ import annotations

import os
from pathlib import Path


def okc_home() -> Path:
    return Path(os.environ.get("OKC_HOME") or Path.home() / ".cache" / "okc").expanduser()


def data_dir(name: str) -> Path:
    """Where dataset ``name`` is downloaded / unpacked by default."""
    return okc_home() / "data" / name


def logs_dir() -> Path:
    return okc_home() / "logs"


def inductor_cache_dir() -> Path:
    return okc_home() / "inductor"
