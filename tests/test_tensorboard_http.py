"""A run opened in TensorBoard as a user opens it: ``tensorboard --logdir`` on a local port,
its scalars, images, text and hparams read back through TensorBoard's HTTP API.

The server listens on 127.0.0.1 at a port the OS picks (``--port 0``; the URL it prints says
which), and stops itself: a watchdog in its process exits after ``SERVER_LIMIT_S`` even if this
test dies, and the test stops it when done.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import okc

SERVER_LIMIT_S = 120
STARTUP_LIMIT_S = 60
# tensorboard's own entry point, with a watchdog that ends the process after the limit
SERVER = (
    "import os, sys, threading\n"
    "threading.Timer(float(sys.argv[1]), lambda: os._exit(3)).start()\n"
    "from tensorboard.main import run_main\n"
    "sys.argv = ['tensorboard', *sys.argv[2:]]\n"
    "run_main()\n"
)


@contextmanager
def tensorboard(logdir: Path) -> Iterator[str]:
    """A TensorBoard server on ``logdir``; yields its base URL."""
    cmd = [sys.executable, "-c", SERVER, str(SERVER_LIMIT_S), "--logdir", str(logdir),
           "--host", "127.0.0.1", "--port", "0", "--load_fast", "false"]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield _wait_for_url(server)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_for_url(server: subprocess.Popen) -> str:
    """The URL TensorBoard prints once it listens (``TensorBoard 2.x at http://...``)."""
    deadline = time.monotonic() + STARTUP_LIMIT_S
    seen = []
    assert server.stdout is not None
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line and server.poll() is not None:
            break
        seen.append(line)
        found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if found:
            return found.group(1)
    raise AssertionError(f"tensorboard did not start within {STARTUP_LIMIT_S} s: {''.join(seen)}")


def get(url: str, path: str, **query: str) -> object:
    full = f"{url}{path}?{urllib.parse.urlencode(query)}" if query else f"{url}{path}"
    with urllib.request.urlopen(full, timeout=30) as response:
        return json.loads(response.read())


def post(url: str, path: str, body: dict) -> object:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tensorboard_serves_the_runs_scalars(tiny_exp, tmp_path: Path) -> None:
    result = okc.fit(tiny_exp("trainer.max_epochs=2"))
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["valid/Accuracy"]) for r in records if "valid/Accuracy" in r]
    logs = tmp_path / "logs"  # the experiment's log_dir: every run below it
    with tensorboard(logs) as url:
        deadline = time.monotonic() + 30  # the server reads the event files in the background
        while not (runs := get(url, "/data/runs")) and time.monotonic() < deadline:
            time.sleep(0.5)
        run = str((result.run_dir / "tensorboard").relative_to(logs))
        assert runs == [run]
        tags = get(url, "/data/plugin/scalars/tags")[run]
        assert {"train/loss", "valid/loss", "valid/Accuracy", "lr-AdamW"} <= set(tags)
        served = get(url, "/data/plugin/scalars/scalars", run=run, tag="valid/Accuracy")
        assert [(step, value) for _, step, value in served] == [
            (step, pytest.approx(value)) for step, value in logged
        ]
        images = get(url, "/data/plugin/images/tags")[run]
        assert images["train/batch/image"]["samples"] == 1
        assert set(get(url, "/data/plugin/text/tags")[run]) == {
            "experiment/text_summary", "status/text_summary",
        }  # fmt: skip
        hparams = post(url, "/data/plugin/hparams/experiment", {"experimentName": ""})
        names = {h["name"] for h in hparams["hparamInfos"]}
        assert "optimization.0.optimizer.params.lr" in names
