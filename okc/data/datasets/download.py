"""Dataset archives: download (or find) one, check its md5, unpack it safely.

Offline, a missing archive fails fast with the file name, md5 and folder to put it in. Downloads
go to a ``.part`` file renamed when complete, and archives unpack into a staging folder moved into
place at the end, so an interrupted run never leaves a half-written dataset that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import attrs

from okc.data.datasets.folder import unpack
from okc.errors import OkcError


@attrs.frozen
class Archive:
    """A dataset's archive: where to fetch it, its md5, and the folder it unpacks to."""

    url: str
    md5: str
    folder: str
    train: tuple[str, ...] = ()  # the files of each split, where the dataset names them here
    test: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# Seconds to wait for the server to answer (and between bytes): offline fails fast.
CONNECT_TIMEOUT = 10.0


def unpack_archive(folder: Path, *, url: str, md5: str, inner: str, download: bool) -> Path:
    """Unpack the archive from ``url`` (kept in ``folder``) to ``folder/inner``; returns that.

    The archive is downloaded when it is not in ``folder`` and ``download`` is set; it must
    match ``md5`` either way. ``inner`` is the folder the archive holds.
    """
    filename = url.rsplit("/", 1)[-1]
    path = folder / filename
    if not path.is_file():
        if not download:
            raise OkcError(
                f"{filename} not found in {folder}; set download: true, or put the file "
                f"there (from {url}, md5 {md5})"
            )
        fetch(url, path, md5=md5)
    digest = md5sum(path)
    if digest != md5:
        raise OkcError(
            f"{path} is corrupt or not the official archive (md5 {digest}, expected "
            f"{md5}); delete it and download again, or put the right file there"
        )
    target = folder / inner
    shutil.rmtree(target, ignore_errors=True)
    staging = folder / (inner + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    unpack(path, staging)
    if not (staging / inner).is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        raise OkcError(f"{path} does not hold the folder {inner}/")
    os.replace(staging / inner, target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def fetch(url: str, path: Path, *, md5: str) -> None:
    """Download ``url`` to ``path``; offline, an error says where to put the file instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        with (
            urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT) as response,
            open(partial, "wb") as f,
        ):
            shutil.copyfileobj(response, f, length=1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as err:
        partial.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        raise OkcError(
            f"cannot download {url} ({reason}); without network access put "
            f"{path.name} (md5 {md5}) in {path.parent}"
        ) from err
    os.replace(partial, path)


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
