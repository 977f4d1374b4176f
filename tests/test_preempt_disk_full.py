"""A checkpoint that runs out of disk: one clear error, no partial file, earlier checkpoints
intact (okc.engine.checkpoint.write_atomic). A preempted run must not lose what it had saved.

One test fills a real 1 MiB tmpfs (needs root to mount; skipped elsewhere), the other a writer
whose disk reports ENOSPC, as ``write(2)`` does on a full disk.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_EXPERIMENT

from okc.engine import checkpoint
from okc.engine.checkpoint import DiskFullError, read_checkpoint, write_atomic


def _state(num_floats: int) -> dict:
    return {"format": 2, "model": {"w": torch.arange(num_floats, dtype=torch.float32)}}


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs mounted at ``tmp_path/disk``."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_full_filesystem_gives_one_clear_error(small_disk: Path) -> None:
    earlier = write_atomic(_state(1000), small_disk / "epoch=0.ckpt")
    with pytest.raises(DiskFullError) as info:
        write_atomic(_state(2**19), small_disk / "last.ckpt")  # 2 MiB of weights
    message = str(info.value)
    assert f"the disk of {small_disk} is full" in message
    assert "MiB free, the checkpoint needs about 2.0 MiB" in message
    assert os.listdir(small_disk) == ["epoch=0.ckpt"]  # no partial or temporary file
    assert torch.equal(read_checkpoint(earlier)["model"]["w"], torch.arange(1000.0))


class _FullDisk:
    """A file on a disk that has ``room`` bytes left: writes past it fail with ENOSPC."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def test_enospc_from_the_writer_gives_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = write_atomic(_state(10), tmp_path / "epoch=0.ckpt")
    real_fdopen = os.fdopen
    monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode),
                                                                            room=4096))  # fmt: skip
    with pytest.raises(DiskFullError, match=f"the disk of {tmp_path} is full"):
        write_atomic(_state(10_000), tmp_path / "last.ckpt")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["epoch=0.ckpt"]
    assert read_checkpoint(earlier)["model"]["w"].shape == (10,)


def test_other_write_errors_stay_what_they_are(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):  # a folder where a file is: not a full disk
        write_atomic(_state(10), tmp_path / "file" / "last.ckpt")


@pytest.mark.distributed
@pytest.mark.slow
def test_a_full_disk_under_torchrun_stops_every_rank_with_one_line(
    small_disk: Path, tmp_path: Path
) -> None:
    """Rank 0 writes the checkpoint and fails; rank 1, waiting for it, stops with its error."""
    data = yaml.safe_load(TINY_EXPERIMENT)
    data["logger"] = {"log_dir": str(tmp_path / "logs"), "experiment_name": "full"}
    data["trainer"].update(accelerator="cpu", max_epochs=1)
    data["callbacks"] = [{"name": "ModelCheckpoint", "params": {"dirpath": str(small_disk)}}]
    path = tmp_path / "full.yml"
    path.write_text(yaml.safe_dump(data))
    logs = tmp_path / "ranks"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--log-dir", str(logs), "--redirects", "2", "-m", "okc", "fit", str(path)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode != 0
    files = sorted(logs.rglob("stderr.log"), key=lambda f: f.parent.name)
    assert len(files) == 2, done.stderr[-3000:]
    for file in files:
        last = [ln for ln in file.read_text().splitlines() if ln.strip()][-1]
        assert last.startswith(
            "error: rank 0 of 2 failed: DiskFullError: cannot save checkpoint "
        ), file.read_text()[-3000:]
        assert f"the disk of {small_disk} is full" in last
        assert "Traceback" not in file.read_text()
    assert os.listdir(small_disk) == []  # nothing partial
