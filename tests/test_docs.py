"""Every code block of the documentation runs: docs/*.md and README.md.

Blocks are fenced with a language (README's indented blocks count as ``sh``):

- ``sh``: each logical line (continuations joined, comments dropped) runs, in order, from a
  sandbox folder that links ``experiments/``; HOME is a temporary folder, so ``~/.cache/okc`` is
  the test's own. A line is expanded by bash (tilde, quotes, variables) into the arguments a shell
  would pass; ``okc ...`` and ``python -m okc ...`` then run in this process through
  ``okc.cli.main`` (the console script's code, without paying torch's import per command), other
  lines (and ``okc`` lines with pipes or redirections) in bash, with ``okc`` on PATH.
  Commands that train or evaluate get ``TINY`` appended: the doc shows the real command, the
  test runs two steps of it. Each line must exit 0 unless the block says otherwise.
- ``yaml``: loaded with okc's loader; a whole experiment (it has ``task``) must pass
  ``okc.check``; a fragment is merged onto a ``base=`` experiment first.
- ``python``: executed, in order, in one namespace per page; ``okc.load_experiment`` appends
  ``TINY`` to its overrides, as the shell commands do.
- ``text``: program output, shown, not run.

An HTML comment right before a block (invisible once rendered) adjusts it:

- ``<!-- test: skip REASON -->``: not run; only for what a test machine cannot do (a Docker
  engine, conda, installing into a new environment, a server that keeps running); the reason is
  required;
- ``<!-- test: exit=N -->``: the block's last line must exit with status N (an error on purpose);
- ``<!-- test: exact -->``: okc commands run without ``TINY``;
- ``<!-- test: base=PATH -->``: the YAML fragment is merged onto the experiment file PATH;
- ``<!-- test: file=PATH -->`` / ``file=PATH#SECTION``: the YAML block shows that file (or one
  top-level section of it): equal as data;
- ``<!-- test: text -->``: an indented README block that is not code (output, a listing);
- ``<!-- test: instead: COMMAND -->``: a block that sets up an environment (a new virtual
  environment, then okc) runs as COMMAND, its okc part.

``<!-- test: slow -->`` anywhere in a page marks its test slow (the page trains models).
``test_docs_structure`` runs the fast checks of every page: languages, reasons, experiment files,
YAML blocks that parse and structure into experiments.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

import okc
from okc.config.load import experiment_from_data, read_file
from okc.config.yaml_loader import safe_load

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
# What the test appends to commands that train or evaluate: two optimizer steps, one batch of
# each evaluation loader, no sanity validation.
TINY = (
    "trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
    "trainer.limit_predict_batches=1", "trainer.num_sanity_val_steps=0",
)  # fmt: skip
TINY_COMMANDS = ("fit", "validate", "test", "predict", "run", "find-lr")
FIND_LR_TINY = ("--num-steps", "4")
LANGUAGES = ("sh", "yaml", "python", "text")
DIRECTIVE = re.compile(r"<!--\s*test:\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")


@attrs.frozen
class Block:
    page: Path
    line: int
    language: str
    text: str
    directive: str = ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def option(self, name: str) -> str | None:
        """``name=value`` or a bare ``name`` (→ "") in the directive."""
        for word in self.directive.split():
            key, eq, value = word.partition("=")
            if key == name:
                return value if eq else ""
        return None


def blocks(page: Path) -> list[Block]:
    """The page's code blocks with the directive right before each (fenced; in README also
    indented, as ``sh``)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    directive, i = "", 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            found.append(Block(page, i + 1, fence.group(1), "\n".join(lines[i + 1 : end]),
                               directive))  # fmt: skip
            directive, i = "", end + 1
            continue
        if page.name == "README.md" and line.startswith("    ") and _starts_block(lines, i):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            text = "\n".join(x[4:] for x in lines[i:end]).strip("\n")
            found.append(Block(page, i + 1, "sh", text, directive))
            directive, i = "", end
            continue
        match = DIRECTIVE.search(line)
        if match and match.group(1) != "slow":
            directive = match.group(1)
        elif line.strip():
            directive = ""
        i += 1
    return found


def _starts_block(lines: list[str], i: int) -> bool:
    """An indented code block starts after a blank line (not a list item's continuation)."""
    before = lines[i - 1] if i else ""
    return not before.strip() and not (i >= 2 and lines[i - 2].lstrip().startswith(("-", "|")))


def is_slow(page: Path) -> bool:
    return "<!-- test: slow -->" in page.read_text(encoding="utf-8")


# --- the fast checks of every page ----------------------------------------------------------------


def test_docs_structure() -> None:
    """Known languages, reasons for skips, experiment files that exist, YAML that structures."""
    problems = []
    for page in PAGES:
        for block in blocks(page):
            if block.language not in LANGUAGES:
                problems.append(f"{block.where}: block language {block.language!r} is not one "
                                f"of {LANGUAGES}")  # fmt: skip
            if block.option("skip") is not None and len(block.directive.split()) < 3:
                problems.append(f"{block.where}: a skip needs a reason")
            if block.language == "yaml" and block.option("skip") is None:
                try:
                    _yaml_experiment(block)
                except Exception as err:
                    problems.append(f"{block.where}: {err}")
        for ref in re.findall(r"experiments/[\w/.-]+\.(?:yml|yaml|toml)", page.read_text()):
            if not (ROOT / ref).is_file():
                problems.append(f"{page.name}: names {ref}, which does not exist")
    assert not problems, "\n".join(problems)


def test_every_section_page_runs_an_experiment() -> None:
    """Each page of the spec's sections runs one of the experiments (a command names it)."""
    for page in (ROOT / "docs").glob("*.md"):
        if page.name in ("README.md", "torchok.md", "install.md"):
            continue
        shell = "\n".join(b.text for b in blocks(page) if b.language in ("sh", "python"))
        assert re.search(r"experiments/[\w/.-]+\.(yml|toml)", shell), f"{page.name} runs none"


def test_readme_and_docs_list_every_docs_page() -> None:
    index = (ROOT / "docs" / "README.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not link {page.name}"
    assert "docs/README.md" in (ROOT / "README.md").read_text()


# --- running a page -------------------------------------------------------------------------------


def _page_params() -> Iterator[Any]:
    for page in PAGES:
        marks = [pytest.mark.slow] if is_slow(page) else []
        yield pytest.param(page, id=str(page.relative_to(ROOT)), marks=marks)


@pytest.mark.parametrize("page", list(_page_params()))
def test_page_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    sandbox = _sandbox(tmp_path, monkeypatch)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    real_load = okc.load_experiment

    def tiny_load(path: Any, overrides: Any = (), **kwargs: Any) -> okc.Experiment:
        return real_load(path, [*overrides, *TINY], **kwargs)

    monkeypatch.setattr(okc, "load_experiment", tiny_load)
    for block in blocks(page):
        if block.directive.startswith("instead:"):
            command = block.directive.removeprefix("instead:").strip()
            block = attrs.evolve(block, language="sh", text=command, directive="")
        if block.option("skip") is not None or block.option("text") is not None:
            continue
        with capsys.disabled() if os.environ.get("OKC_DOCS_VERBOSE") else nullcontext():
            if block.language == "sh":
                _run_shell(block, sandbox)
            elif block.language == "yaml":
                exp = _yaml_experiment(block)
                if exp is not None:
                    errors = okc.check(exp)
                    assert not errors, f"{block.where}: " + "; ".join(map(str, errors))
            elif block.language == "python":
                code = compile(block.text, block.where, "exec")
                exec(code, namespace)


def _sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with experiments/ linked, HOME in tmp, ``okc`` on PATH."""
    sandbox = tmp_path / "work"
    sandbox.mkdir()
    (sandbox / "experiments").symlink_to(ROOT / "experiments")
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, command in (("okc", f'"{sys.executable}" -m okc'), ("python", f'"{sys.executable}"')):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        shim.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("OKC_HOME", raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # okc from this checkout, in bash lines too
    monkeypatch.syspath_prepend(str(ROOT))  # and in processes okc.launch spawns
    monkeypatch.chdir(sandbox)
    return sandbox


def logical_lines(text: str) -> list[str]:
    """Shell lines with continuations joined and comment lines dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip


def _run_shell(block: Block, sandbox: Path) -> None:
    expected = int(block.option("exit") or 0)
    lines = logical_lines(block.text)
    assert lines, f"{block.where}: an empty shell block"
    for n, line in enumerate(lines):
        want = expected if n == len(lines) - 1 else 0
        code = _run_line(line, block, sandbox)
        assert code == want, f"{block.where}: `{line}` exited {code}, expected {want}"


def _shell_words(line: str, sandbox: Path) -> list[str]:
    """The arguments bash would pass for ``line`` (tilde, quotes and variables expanded)."""
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {line}"], capture_output=True,
                         cwd=sandbox, check=True)  # fmt: skip
    return out.stdout.decode().split("\0")[:-1]


def _run_line(line: str, block: Block, sandbox: Path) -> int:
    code_part = _strip_comment(line)
    in_process = not re.search(r"[|><;&]", code_part) and re.match(r"(okc|python3? -m okc)\b",
                                                                   code_part)  # fmt: skip
    if not in_process:
        command = code_part
        plain = not re.search(r"[|><;&]", code_part)  # no pipes, redirections or lists
        if block.option("exact") is None and plain and re.search(r"-m okc\b", code_part):
            command = shlex.join(tiny_in_line(shlex.split(code_part)))
        done = subprocess.run(["bash", "-c", command], cwd=sandbox, timeout=600)
        return done.returncode
    words = _shell_words(code_part, sandbox)
    argv = words[1:] if words[0] == "okc" else words[3:]
    if block.option("exact") is None:
        argv = tiny(argv)
    from okc.cli import main

    try:
        return main(argv)
    except SystemExit as done:  # --version, --help
        return int(done.code or 0)


def _strip_comment(line: str) -> str:
    """``okc fit x.yml  # what it does`` → ``okc fit x.yml`` (a # inside quotes stays)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def tiny_in_line(words: list[str]) -> list[str]:
    """A command line that runs okc inside another (``python -m torch.distributed.run ... -m
    okc fit ...``): the tiny overrides after okc's command."""
    for i in range(len(words) - 1):
        if words[i : i + 2] == ["-m", "okc"]:
            return [*words[: i + 2], *tiny(words[i + 2 :])]
    return words


def tiny(argv: list[str]) -> list[str]:
    """``argv`` with the tiny overrides for commands that train or evaluate."""
    command = argv[0] if argv else ""
    hydra = any(a.split("=")[0] in ("-cp", "-cn", "--config-path", "--config-name") for a in argv)
    if command == "find-lr":
        return [*argv, *TINY, *FIND_LR_TINY]
    if command in TINY_COMMANDS or hydra:
        return [*argv, *TINY]
    return argv


def _yaml_experiment(block: Block) -> okc.Experiment | None:
    """The experiment a YAML block is (or completes); None for a block that shows a file."""
    data = safe_load(block.text)
    assert isinstance(data, dict), "a YAML block is a mapping of experiment sections"
    shown = block.option("file")
    if shown is not None:
        path, _, section = shown.partition("#")
        whole = read_file(ROOT / path)
        expected = {section: whole[section]} if section else whole
        assert data == expected, f"the block differs from {shown}"
        return None
    base = block.option("base")
    if base is not None:
        data = _merged(read_file(ROOT / base), data)
    elif "task" not in data:
        raise AssertionError("a YAML fragment needs <!-- test: base=experiments/... -->")
    return experiment_from_data(data, name=Path(base or "doc").stem)


def _merged(base: dict, fragment: dict) -> dict:
    out = dict(base)
    for key, value in fragment.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def test_the_conventions_themselves(tmp_path: Path) -> None:
    """The harness's own rules on a page written for the purpose."""
    page = tmp_path / "page.md"
    page.write_text(
        "Intro\n\n<!-- test: skip needs a Docker engine -->\n```sh\ndocker build .\n```\n\n"
        "<!-- test: base=experiments/shapes.yml -->\n```yaml\ntrainer: {max_epochs: 3}\n```\n\n"
        "```text\nprinted\n```\n"
    )
    found = blocks(page)
    assert [(b.language, b.option("skip"), b.option("base")) for b in found] == [
        ("sh", "", None), ("yaml", None, "experiments/shapes.yml"), ("text", None, None),
    ]  # fmt: skip
    assert logical_lines("okc fit a.yml \\\n  x=1  # why\n# comment\nokc list") == [
        "okc fit a.yml x=1  # why", "okc list",
    ]  # fmt: skip
    assert _strip_comment("okc fit a.yml x=1  # why") == "okc fit a.yml x=1"
    assert tiny(["fit", "a.yml"]) == ["fit", "a.yml", *TINY]
    assert tiny(["export", "a.yml", "--checkpoint", "best"])[-1] == "best"
    assert tiny_in_line(["python", "-m", "torch.distributed.run", "-m", "okc", "fit", "a.yml"]) == [
        "python", "-m", "torch.distributed.run", "-m", "okc", "fit", "a.yml", *TINY,
    ]  # fmt: skip
    exp = _yaml_experiment(found[1])
    assert exp is not None and exp.trainer.max_epochs == 3
    assert exp.task.params["backbone_name"] == "resnet10t"  # the rest from the base
    assert yaml.safe_load("a: 1") == {"a": 1}
