"""Every component okc registers is built and run (the cases are in tests/contracts/)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import contracts
import pytest
from contracts.runners import RUNNERS, Case

from okc.registry import REGISTRIES


def _all_cases() -> dict[tuple[str, str], Case]:
    cases: dict[tuple[str, str], Case] = {}
    for info in pkgutil.iter_modules(contracts.__path__):
        if info.name.startswith("cases_"):
            module = importlib.import_module(f"contracts.{info.name}")
            clash = cases.keys() & module.CASES.keys()
            assert not clash, f"{info.name} repeats cases of another module: {sorted(clash)}"
            cases.update(module.CASES)
    return cases


CASES = _all_cases()


_LIST_REGISTERED = """
import json
from okc.registry import REGISTRIES
print(json.dumps({kind: r.registered() for kind, r in REGISTRIES.items()}))
"""


@pytest.fixture(scope="session")
def registered() -> set[tuple[str, str]]:
    """What okc itself registers, read in a fresh interpreter: test modules in this process
    register components of their own, which are not okc's."""
    done = subprocess.run(
        [sys.executable, "-c", _LIST_REGISTERED], capture_output=True, text=True, check=True
    )
    return {(kind, name) for kind, names in json.loads(done.stdout).items() for name in names}


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_registered_component_has_a_case(kind: str, registered: set) -> None:
    missing = sorted(name for k, name in registered if k == kind and (k, name) not in CASES)
    assert not missing, (
        f"registered {kind} without a contract case: {missing}; add a Case to a "
        "tests/contracts/cases_*.py module (see tests/contracts/README.md)"
    )


def test_every_case_names_a_registered_component(registered: set) -> None:
    assert not [key for key in CASES if key not in registered]


@pytest.mark.parametrize(("kind", "name"), sorted(CASES), ids=lambda v: str(v))
def test_component_contract(
    kind: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_exp: Any
) -> None:
    case = CASES[kind, name]
    check = case.check or RUNNERS.get(kind)
    assert check is not None, f"{kind} has no default check: the case of {name} needs check="
    check(name, case, tmp_path=tmp_path, monkeypatch=monkeypatch, tiny_exp=tiny_exp)
