"""okc's interpolation against OmegaConf's, case by case (TorchOk's files were written for it).

Each row of ``CASES`` is a YAML text and the environment it runs in. The text is read once (okc's
YAML loader) and the same mapping is resolved twice: by OmegaConf (``to_container(resolve=True)``,
with Hydra's ``now`` registered, pinned to one instant as Hydra caches it) and by okc's
``okc.config.interpolate.resolve`` (what ``okc.config.load`` calls). A row expects one of:

* ``SAME``: equal values with equal types, all the way down;
* ``Raises(key)``: OmegaConf raises, and okc raises a ``ConfigError`` located at ``key``;
* ``Differs(okc_value, why)``: okc is deliberately different; the row says why, checks okc's
  value (a value, or ``Raises(key)``) and that OmegaConf's result is indeed different.

``test_torchok_files_resolve_like_omegaconf`` then resolves every TorchOk and okc experiment file
whole, both ways. OmegaConf is a test-only dependency (the ``dev`` extra); okc never imports it.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import pytest

from okc.config.interpolate import resolve
from okc.config.yaml_loader import safe_load
from okc.errors import ConfigError

omegaconf = pytest.importorskip("omegaconf")
OmegaConf = omegaconf.OmegaConf

NOW = dt.datetime(2024, 5, 6, 7, 8, 9)
HOME = "/home/okc"
ROOT = Path(__file__).parents[1]


class Raises(NamedTuple):
    key: str  # the dotted key path the ConfigError names


class Differs(NamedTuple):
    okc: Any  # okc's value of the whole config, or Raises(key)
    why: str


SAME = "same"


class Case(NamedTuple):
    id: str
    text: str
    expect: Any = SAME
    env: Mapping[str, str | None] = MappingProxyType({})  # None: the variable is unset


LOGGER = """
logger:
  name: MLFlowLoggerX
  experiment_name: cifar10
  log_dir: '${oc.env:HOME}/.cache/torchok/${logger.experiment_name}/logs'
  timestamp: '${now:%Y-%m-%d}/${now:%H-%M-%S}'
  params:
    run_name: run1
    tracking_uri: '${oc.env:DB_URI}'
    artifact_location: '${oc.env:S3_ARTIFACT_BUCKET}'
callbacks:
  - name: ModelCheckpoint
    params:
      dirpath: '${logger.log_dir}/${logger.params.run_name}/${logger.timestamp}'
"""
LOGGER_ENV = {"DB_URI": "sqlite:///m.db", "S3_ARTIFACT_BUCKET": "s3://b/a"}

CASES = [
    # --- oc.env, as TorchOk files use it ----------------------------------------------------------
    Case("env_home_path", "data: {folder: '${oc.env:HOME}/.cache/torchok/cifar10/data'}"),
    Case("env_whole_value", "p: {uri: '${oc.env:DB_URI}'}", env={"DB_URI": "sqlite:///m.db"}),
    Case("env_number_stays_str", "n: '${oc.env:N}'", env={"N": "5"}),
    Case("env_value_with_spaces", "s: '${oc.env:S}'", env={"S": "a b"}),
    Case("env_value_not_reinterpolated", "a: 1\nb: '${oc.env:W}'", env={"W": "${a}"}),
    Case("env_name_spaces", "h: '${oc.env: HOME }'"),
    Case("env_null_default_used", "f: '${oc.env:ARCHIVE,null}'", env={"ARCHIVE": None}),
    Case("env_null_default_unused", "f: '${oc.env:ARCHIVE,null}'", env={"ARCHIVE": "/a.tar"}),
    Case("env_null_default_in_text", "f: 'x${oc.env:ARCHIVE,null}'", env={"ARCHIVE": None}),
    Case(
        "env_nested_default_used",
        "d: '${oc.env:OKC_HOME,${oc.env:HOME}/.cache/okc}/data/cifar10'",
        env={"OKC_HOME": None},
    ),
    Case(
        "env_nested_default_unused",
        "d: '${oc.env:OKC_HOME,${oc.env:HOME}/.cache/okc}/data/cifar10'",
        env={"OKC_HOME": "/okc"},
    ),
    Case("env_default_quoted_number", "v: \"${oc.env:U,'8'}\"", env={"U": None}),
    Case("env_default_quoted_comma", "v: \"${oc.env:U,'a,b'}\"", env={"U": None}),
    Case("env_default_double_quoted", "v: '${oc.env:U,\"a b\"}'", env={"U": None}),
    Case("env_default_quoted_interp", "x: 3\nv: \"${oc.env:U,'p${x}'}\"", env={"U": None}),
    Case("env_default_empty_quoted", "v: \"${oc.env:U,''}\"", env={"U": None}),
    Case("env_default_spaces", "v: '${oc.env:U, a b }'", env={"U": None}),
    Case("env_default_url", "v: '${oc.env:U,http://h:5000/x}'", env={"U": None}),
    Case("env_default_path", "v: '${oc.env:U,/data/x-1_2.3/@a+b%c}'", env={"U": None}),
    Case("env_in_list", "a: ['${oc.env:HOME}/x', 2]"),
    Case(
        "env_anchor_alias",
        "d: {folder: &f '${oc.env:HOME}/data'}\nv: {folder: *f}",
    ),
    # --- Hydra's now ------------------------------------------------------------------------------
    Case("now_timestamp", "t: '${now:%Y-%m-%d}/${now:%H-%M-%S}'"),
    Case("now_with_colons", "t: '${now:%H:%M:%S}'"),
    Case("now_with_space", "t: '${now:%Y %m}'"),
    Case(
        "now_in_path",
        "l: {d: /logs, e: x, p: '${l.d}/${l.e}/${now:%Y-%m-%d}/${now:%H-%M-%S}'}",
    ),
    # --- key references -------------------------------------------------------------------------
    Case("ref_int_keeps_type", "trainer: {max_epochs: 4}\nm: {epochs: '${trainer.max_epochs}'}"),
    Case("ref_float_keeps_type", "a: 0.5\nb: '${a}'\nc: 1e-3\nd: '${c}'"),
    Case("ref_bool_and_null", "a: true\nb: '${a}'\nc: null\nd: '${c}'"),
    Case("ref_in_text_is_str", "a: 5\nb: 'e${a}'\nc: '${a}${a}'\nd: true\ne: 'x${d}'"),
    Case("ref_float_in_text", "a: 1e-3\nb: 'lr${a}'"),
    Case("ref_null_in_text", "a: null\nb: 'x${a}'"),
    Case("ref_mapping", "a: {x: 1, y: [2]}\nb: '${a}'"),
    Case("ref_list", "a: [1, 2]\nb: '${a}'"),
    Case("ref_collection_in_text", "a: {x: 1}\nb: 'p${a}'\nc: [1, 2]\nd: 'q${c}'"),
    Case("ref_chain", "a: '${b}'\nb: '${c}'\nc: 7"),
    Case("ref_deep", "l: {p: {run_name: r}}\nd: '${l.p.run_name}/x'"),
    Case("ref_list_index", "a: [1, 2]\nb: '${a.0}'\nc: '${a.1}'"),
    Case("ref_in_list_items", "a: 3\nb: ['${a}', 'x${a}', [ '${a}' ]]"),
    Case("ref_hyphen_key", "a: {b-c: 1}\nd: '${a.b-c}'"),
    Case("ref_whitespace", "a: 1\nb: '${ a }'"),
    Case("ref_key_from_ref", "a: {b: 2}\nc: b\nd: '${a.${c}}'"),
    Case("ref_torchok_logger_block", LOGGER, env=LOGGER_ENV),
    Case("rel_sibling", "a: {b: 1, c: '${.b}'}"),
    Case("rel_parent", "a: {b: {c: '${..x}'}, x: 1}"),
    Case("rel_at_root", "x: 1\na: '${.x}'"),
    Case("rel_in_list", "a: [1, '${.0}']\nb: [{c: 2, d: '${..0.c}'}]"),
    # --- escapes and plain text -------------------------------------------------------------------
    Case("escaped", r"a: '\${x}'"),
    Case("escaped_then_referenced", "a: '\\${x}'\nb: '${a}'"),
    Case("escaped_backslash", "a: 1\nb: 'x\\\\${a}'"),
    Case("escaped_backslash_and_dollar", "a: 1\nb: '\\\\\\${a}'"),
    Case("two_escaped_backslashes", "a: 1\nb: '\\\\\\\\${a}'"),
    Case("backslashes_elsewhere", "a: 1\nb: 'C:\\\\dir\\path'\nc: '${a}\\\\'\nd: '\\\\a${a}'"),
    Case("dollar_and_braces_text", "a: '$HOME'\nb: 'x$'\nc: '{x}'\nd: '}'"),
    # --- errors: OmegaConf raises, okc raises a ConfigError at the key ----------------------------
    Case("missing_env", LOGGER, Raises("logger.params.tracking_uri"), env={"DB_URI": None}),
    Case("missing_env_nested", "a: {b: '${oc.env:U}/x'}", Raises("a.b"), env={"U": None}),
    Case("missing_key", "a: {b: '${nope.x}'}", Raises("a.b")),
    Case("missing_list_index", "a: [1]\nb: '${a.5}'", Raises("b")),
    Case("cycle", "a: '${b}'\nb: '${a}'", Raises("a")),
    Case("self_reference", "a: {b: '${a.b}'}", Raises("a.b")),
    Case("unknown_resolver", "a: '${foo:x}'", Raises("a")),
    Case("unterminated", "a: {b: '${x'}", Raises("a.b")),
    Case("empty_interpolation", "a: '${}'", Raises("a")),
    Case("env_without_name", "a: '${oc.env:}'", Raises("a")),
    Case("rel_above_root", "a: '${..x}'\nx: 1", Raises("a")),  # fixed in okc: it went to the root
    Case("env_unquoted_comma", "a: '${oc.env:U,a,b}'", Raises("a"), env={"U": None}),  # fixed too
    # --- okc's deliberate differences -------------------------------------------------------------
    Case(
        "typed_env_default_int",
        "v: '${oc.env:U,8}'",
        Differs({"v": 8}, "okc reads a default as a YAML scalar; OmegaConf 2.4 str()s it"),
        env={"U": None},
    ),
    Case(
        "typed_env_default_other",
        "x: 3\nv: ['${oc.env:U,true}', '${oc.env:U,-1}', '${oc.env:U,[1,2]}', '${oc.env:U,${x}}']",
        Differs({"x": 3, "v": [True, -1, [1, 2], 3]}, "a default is a YAML scalar (as above)"),
        env={"U": None},
    ),
    Case(
        "lenient_default_chars",
        "v: ['${oc.env:U,~/data}', '${oc.env:U,k=v}']",
        Differs({"v": ["~/data", "k=v"]}, "OmegaConf's grammar rejects unquoted ~ and ="),
        env={"U": None},
    ),
    Case(
        "legacy_env_resolver",
        "h: '${env:HOME}'",
        Differs({"h": HOME}, "okc keeps OmegaConf 2.0's env resolver (removed in 2.1)"),
    ),
    Case(
        "other_oc_resolvers",
        "a: 1\nb: '${oc.select:a}'",
        Differs(Raises("b"), "okc knows env, oc.env and now; anything else is a clear error"),
    ),
    Case(
        "bracket_index",
        "a: [1, 2]\nb: '${a[1]}'",
        Differs(Raises("b"), "okc indexes lists with dots only (${a.1}); TorchOk files do too"),
    ),
]


@pytest.fixture(scope="module", autouse=True)
def _hydra_now() -> Any:
    """Hydra's ``now`` resolver (cached: one instant per run), pinned to ``NOW``."""
    register = getattr(OmegaConf, "register_resolver", None) or OmegaConf.register_new_resolver
    register("now", lambda pattern: NOW.strftime(pattern), use_cache=True, replace=True)
    yield
    OmegaConf.clear_resolver("now")


def _env(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str | None]) -> None:
    monkeypatch.setenv("HOME", HOME)
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def _omegaconf(data: Any) -> Any:
    """OmegaConf's resolved container, or the exception it raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the empty-default grammar warning
        try:
            return OmegaConf.to_container(OmegaConf.create(data), resolve=True)
        except Exception as err:
            return err


def _okc(data: Any) -> Any:
    try:
        return resolve(data, now=NOW)
    except ConfigError as err:
        return err


def _assert_same(got: Any, want: Any, where: str = "") -> None:
    """Equal values and equal types (``4`` is not ``4.0`` nor ``"4"``), all the way down."""
    assert type(got) is type(want), f"{where or 'top'}: {got!r} is not {want!r}"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            _assert_same(got[key], want[key], f"{where}.{key}" if where else str(key))
    elif isinstance(want, list):
        assert len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_same(g, w, f"{where}.{i}")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _assert_raises_at(got: Any, key: str) -> None:
    assert isinstance(got, ConfigError), f"okc did not raise: {got!r}"
    assert got.path == key, f"okc's error names {got.path!r}, not {key!r}: {got}"
    assert str(got).startswith(f"{key}: ")


def test_cases_have_unique_ids() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_okc_resolves_like_omegaconf(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, case.env)
    data = safe_load(case.text)
    theirs, ours = _omegaconf(data), _okc(data)
    if case.expect == SAME:
        assert not isinstance(theirs, Exception), f"OmegaConf raised: {theirs!r}"
        assert not isinstance(ours, Exception), f"okc raised: {ours}"
        _assert_same(ours, theirs)
    elif isinstance(case.expect, Raises):
        assert isinstance(theirs, Exception), f"OmegaConf resolved it: {theirs!r}"
        _assert_raises_at(ours, case.expect.key)
    else:
        want = case.expect.okc
        if isinstance(want, Raises):
            _assert_raises_at(ours, want.key)
        else:
            _assert_same(ours, want)
        assert isinstance(theirs, Exception) or repr(theirs) != repr(want), (
            f"OmegaConf now agrees with okc ({theirs!r}): make the row SAME"
        )


def _experiment_files() -> list[Path]:
    files = [*ROOT.glob("tests/torchok/**/*.yaml"), *ROOT.glob("tests/torchok/**/*.yml")]
    files += [*ROOT.glob("experiments/**/*.yaml"), *ROOT.glob("experiments/**/*.yml")]
    return sorted(p for p in files if "${" in p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", _experiment_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_torchok_files_resolve_like_omegaconf(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file with an interpolation, resolved whole: the same values and types both ways.

    Each variable a file reads without a default gets a value; those with one are unset, so the
    defaults are exercised.
    """
    text = path.read_text(encoding="utf-8")
    for name, default in re.findall(r"\$\{oc\.env:\s*(\w+)\s*(,?)", text):
        if default:
            monkeypatch.delenv(name, raising=False)
        elif name != "HOME":
            monkeypatch.setenv(name, f"/env/{name.lower()}")
    _env(monkeypatch, {})
    data = safe_load(text)
    theirs = _omegaconf(data)
    assert not isinstance(theirs, Exception), f"OmegaConf raised: {theirs!r}"
    _assert_same(_okc(data), theirs)


def test_every_torchok_interpolation_form_is_in_the_table() -> None:
    """Each kind of ``${...}`` the files use has a row: resolvers by name, references as ``ref``."""
    used = set()
    for path in _experiment_files():
        for body in re.findall(r"\$\{([^${}]*)", path.read_text(encoding="utf-8")):
            head, colon, _ = body.partition(":")
            used.add(head.strip() if colon else "ref")
    rows = {case.id.split("_")[0] for case in CASES if case.expect == SAME}
    names = {"oc.env": "env", "now": "now", "ref": "ref"}
    assert used <= set(names), f"a new interpolation form in the files: {used - set(names)}"
    assert {names[u] for u in used} <= rows
