"""``okc check`` on every TorchOk example config and every shipped experiment gives the verdict
and the resolved print recorded in ``tests/golden/check.json``.

The record was taken before params became attrs classes structured by the one converter
(issue 19); this test holds that refactor, and any later one, to the same verdicts and prints.
Rewrite the record on purpose with ``OKC_GOLDEN_WRITE=1 pytest tests/test_check_golden.py``.
Paths that vary per run read as ``<tmp>`` (HOME and the stores), ``<okc-home>`` and ``<root>``;
timestamps from ``${now:...}`` read ``<now>``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import pytest

from okc.cli import main

ROOT = Path(__file__).parent.parent
GOLDEN = Path(__file__).parent / "golden" / "check.json"
_NOW = re.compile(r"\d{4}-\d\d-\d\d[/_ T]\d\d-\d\d-\d\d")  # ${now:...} timestamps
FILES = sorted(
    [p for p in (ROOT / "tests" / "torchok").rglob("*") if p.suffix in (".yaml", ".yml")]
    + [p for p in (ROOT / "experiments").rglob("*") if p.suffix in (".yaml", ".yml", ".toml")]
)


def _run(
    path: Path, home: Path, tmp: Path, capsys: pytest.CaptureFixture[str]
) -> dict[str, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(["check", str(path)])
    out, err = capsys.readouterr()
    okc_home = os.environ["OKC_HOME"]  # conftest's, per test
    clean = [
        s.replace(okc_home, "<okc-home>")
        .replace(str(home), "<tmp>")
        .replace(str(tmp), "<tmp>")
        .replace(str(ROOT), "<root>")
        for s in (out, err)
    ]
    clean = [_NOW.sub("<now>", s) for s in clean]
    return {"status": status, "stdout": clean[0], "stderr": clean[1]}


def test_every_config_checks_as_recorded(
    torchok_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``torchok_env`` (conftest): HOME and the stores TorchOk's files read, in ``tmp_path``."""
    monkeypatch.chdir(ROOT)
    got = {str(p.relative_to(ROOT)): _run(p, torchok_env, tmp_path, capsys) for p in FILES}
    if os.environ.get("OKC_GOLDEN_WRITE"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want)
    for name, result in got.items():
        assert result == want[name], name
    # the record is not vacuous: most files pass, and the ones that fail say where
    verdicts = [r["status"] for r in want.values()]
    assert verdicts.count(0) >= 20 and len(verdicts) == len(FILES)
