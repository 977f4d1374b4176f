"""``okc export --quantize int8``: a QDQ int8 ONNX file calibrated on VALID, its check against
fp32 on VALID and the latency table; bad requests fail before anything is exported."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
import yaml
from conftest import TINY_EXPERIMENT

from okc.cli import main
from okc.errors import ConfigError
from okc.exports import export_experiment
from okc.exports.quantize import compare_on_valid, valid_batches


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    data = yaml.safe_load(TINY_EXPERIMENT)
    data["logger"] = {"log_dir": str(tmp_path / "logs"), "experiment_name": "tiny"}
    path = tmp_path / "tiny.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.slow
def test_int8_export_calibrates_checks_and_times(
    tiny_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stem = tmp_path / "out" / "tiny"
    code = main(["export", str(tiny_file), "--output", f"{stem}.onnx", "--quantize", "int8",
                 "--calibration-batches", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    fp32, int8, report = (Path(f"{stem}{s}") for s in (".onnx", ".int8.onnx", ".int8.json"))
    assert all(p.is_file() for p in (fp32, int8, report))
    model = onnx.load(str(int8))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 5  # every conv's weights, per channel
    assert int8.stat().st_size < fp32.stat().st_size / 2
    data = json.loads(report.read_text(encoding="utf-8"))
    valid = data["valid"]
    assert valid["num_samples"] == 128  # every VALID image, not only the calibration batch
    assert 0.7 <= valid["agreement"] <= 1.0
    assert valid["drop_points"] == pytest.approx(
        100 * (valid["fp32_accuracy"] - valid["int8_accuracy"])
    )
    assert set(data["latency_ms"]) == {"torch eager", "onnx fp32", "onnx int8"}
    assert all(ms > 0 for by_batch in data["latency_ms"].values() for ms in by_batch.values())
    assert {b for by_batch in data["latency_ms"].values() for b in by_batch} == {"1", "32"}
    assert "VALID top-1 (128 images)" in out and "onnx int8" in out
    # the fp32 accuracy in the report is what the fp32 file scores on VALID
    from okc.config.load import load_experiment

    exp = load_experiment(tiny_file)
    session = onnx_scores(fp32)
    hits = sum(
        int((session(b["image"]).argmax(1) == b["target"]).sum()) for b in valid_batches(exp)
    )
    assert valid["fp32_accuracy"] == pytest.approx(hits / 128)
    assert compare_on_valid(exp, fp32, fp32, key="image").agreement == 1.0


def onnx_scores(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path))
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


@pytest.mark.parametrize(
    ("overrides", "kwargs", "where"),
    [
        ((), {"quantize": "int4"}, "--quantize"),
        ((), {"quantize": "int8", "calibration_batches": 0}, "--calibration-batches"),
        (("~data.VALID",), {"quantize": "int8"}, "data.VALID"),
    ],
)
def test_bad_int8_requests_fail_before_exporting(
    tiny_exp, tmp_path: Path, overrides: tuple[str, ...], kwargs: dict, where: str
) -> None:
    with pytest.raises(ConfigError) as err:
        export_experiment(tiny_exp(*overrides), output=tmp_path / "m.onnx", **kwargs)
    assert str(err.value).startswith(where)
    assert not (tmp_path / "m.onnx").exists()
