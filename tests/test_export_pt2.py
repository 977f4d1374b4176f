"""``okc export --format pt2``: a torch.export + AOTInductor package that torch alone loads and
runs, at batch sizes other than the traced one, with PyTorch's outputs.

One test only: the AOTInductor compile calls a C++ compiler (about 45 s of CPU time for the
tiny model on 2 cores)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from okc.engine.build import build_task
from okc.exports import export_experiment

# Loads and runs the package with torch alone; fails if anything imported okc.
STANDALONE = textwrap.dedent("""
    import sys, torch
    model = torch._inductor.aoti_load_package(sys.argv[1])
    inputs = torch.load(sys.argv[2], weights_only=True)
    outputs = [model(x) for x in inputs]
    assert not any(m == "okc" or m.startswith("okc.") for m in sys.modules), "okc was imported"
    torch.save(outputs, sys.argv[3])
""")


@pytest.mark.slow
def test_pt2_package_runs_without_okc_with_a_dynamic_batch(tiny_exp, tmp_path: Path) -> None:
    exp = tiny_exp()
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = export_experiment(exp, output=tmp_path / "tiny.onnx", fmt="pt2")
    assert written == [tmp_path / "tiny.pt2"] and written[0].is_file()
    assert not [w for w in caught if "differs from PyTorch" in str(w.message)]  # parity held
    torch.manual_seed(0)
    task = build_task(exp).eval()  # the same weights as the exported ones
    inputs = [torch.randn(b, 3, 16, 16) for b in (1, 5)]  # traced with 2: the batch is dynamic
    torch.save(inputs, tmp_path / "inputs.pt")
    subprocess.run(
        [sys.executable, "-c", STANDALONE, str(written[0]), str(tmp_path / "inputs.pt"),
         str(tmp_path / "outputs.pt")], check=True, cwd=tmp_path,
    )  # fmt: skip
    outputs = torch.load(tmp_path / "outputs.pt", weights_only=True)
    with torch.no_grad():
        for x, got in zip(inputs, outputs, strict=True):
            assert got.shape == (x.shape[0], 4)
            torch.testing.assert_close(got, task(x), atol=1e-4, rtol=1e-4)
