"""The conda and Docker install paths (environment.yml, Dockerfile) name the requirements
pyproject.toml names: its dependencies and the tensorboard and plot extras. No Docker engine or
conda here: the files are parsed, as pip and the shell would read them."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("tensorboard", "plot")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def normalized(requirements: list[str]) -> set[str]:
    """Requirements as pip reads them (``pyyaml >= 6`` and ``PyYAML>=6`` are one)."""
    out = set()
    for text in requirements:
        req = Requirement(text)
        out.add(f"{req.name.lower().replace('_', '-')}{req.specifier}"
                + (f"; {req.marker}" if req.marker else ""))  # fmt: skip
    return out


def expected() -> set[str]:
    project = pyproject()["project"]
    extras = [r for name in EXTRAS for r in project["optional-dependencies"][name]]
    return normalized([*project["dependencies"], *extras])


def test_environment_yml_names_pyprojects_requirements() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "okc"
    deps = env["dependencies"]
    (python,) = [d for d in deps if isinstance(d, str) and d.startswith("python=")]
    version = python.split("=", 1)[1]
    assert version in SpecifierSet(pyproject()["project"]["requires-python"])
    assert "pip" in deps
    (pip,) = [d["pip"] for d in deps if isinstance(d, dict)]
    options = [line for line in pip if line.startswith("-")]
    assert options == ["-e ."]  # okc itself, from the checkout
    assert normalized([line for line in pip if not line.startswith("-")]) == expected()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    lines = [
        line for line in (ROOT / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]  # fmt: skip
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in joined.splitlines()
        if line.strip()
    ]


def pip_installs() -> list[list[str]]:
    """The arguments of each ``pip install`` the RUN lines execute (shell-split)."""
    found = []
    for instruction, args in dockerfile_instructions():
        if instruction != "RUN":
            continue
        for command in re.split(r"&&|;(?![^\"]*\")", args):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                found.append(words[2:])
    return found


def test_dockerfile_installs_pyprojects_requirements() -> None:
    requirements, okc_itself = pip_installs()
    assert normalized(requirements) == expected() | {"jupyterlab"}  # + Jupyter Lab's server
    assert okc_itself == ["--no-deps", "-e", "/opt/okc"]


def test_dockerfile_serves_jupyter_tensorboard_and_ssh_on_a_cuda_base() -> None:
    instructions = dockerfile_instructions()
    values = {}
    for instruction, args in instructions:
        values.setdefault(instruction, []).append(args)
    assert values["FROM"][0].startswith("nvidia/cuda:") and "cudnn" in values["FROM"][0]
    assert values["ARG"] == ['SSH_PUBLIC_KEY=""']
    assert set(values["EXPOSE"][0].split()) == {"22", "8888", "6006"}
    (cmd,) = values["CMD"]
    shell, flag, cmd = json.loads(cmd)  # the exec form: a JSON array once lines are joined
    assert (shell, flag) == ("bash", "-c")
    assert "jupyter lab --ip 0.0.0.0 --port 8888" in cmd
    assert "tensorboard --logdir" in cmd and "--port 6006" in cmd
    assert "/usr/sbin/sshd" in cmd and "authorized_keys" in cmd
    copied = [args.split()[0] for args in values["COPY"]]
    assert {"okc", "experiments", "pyproject.toml"} <= set(copied)
    key_setup = next(args for args in values["RUN"] if "SSH_PUBLIC_KEY" in args)
    assert "> /root/.ssh/authorized_keys" in key_setup  # only written when a key is given
    assert 'if [ -n "$SSH_PUBLIC_KEY" ]' in key_setup


def test_ci_runs_exactly_the_readme_test_command() -> None:
    """CI installs from scratch on a clean clone and runs the README's "Run the tests" command
    verbatim: the one indented command line after that heading is a line of ``.ci/run``."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("**Run the tests.**", 1)[1]
    command = next(line.strip() for line in section.splitlines() if line.startswith("    "))
    assert command.startswith("python3 -m venv .venv && ") and "pytest" in command, command
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci, f"{command!r} is not a line of .ci/run"
