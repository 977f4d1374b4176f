"""Experiments: YAML/TOML loading, interpolation, overrides, strict structuring and its errors."""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from pathlib import Path

import attrs
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from okc.config.load import experiment_from_data, load_experiment
from okc.config.schema import Experiment, Phase, Trainer
from okc.errors import ConfigError, ConfigErrors, OkcError

# The spec (TorchOk's getting-started page, Apache-2.0) is vendored so CI reads it from any clone;
# test_vendored_spec_is_current keeps the copy equal to the shared original when it is present.
SPEC = Path(__file__).parent / "spec" / "torchok_getting_started.rst"
SHARED_SPEC = Path(__file__).parents[2] / "shared" / "spec" / "torchok_getting_started.rst"

YAML_EXP = """
task:
  name: ClassificationTask
  compute_loss_on_valid: false
  params:
    backbone_name: resnet18
    head_name: ClassificationHead
    head_params: {num_classes: &num_classes 10}
joint_loss:
  losses:
    - {name: CrossEntropyLoss, mapping: {input: prediction, target: target}, tag: ce}
optimization:
  - optimizer: {name: SGD, params: {lr: 0.1, momentum: 0.9}}
    scheduler:
      name: OneCycleLR
      params: {max_lr: 0.1, total_steps: 100}
      pl_params: {interval: step}
data:
  TRAIN:
    - dataset:
        name: Shapes
        params: {num_samples: 64}
        augment: [{name: HorizontalFlip}]
      dataloader: {batch_size: 8, shuffle: true, drop_last: true}
metrics:
  - name: Accuracy
    params: {task: multiclass, num_classes: *num_classes}
    mapping: {preds: prediction, target: target}
    phases: [VALID, TEST]
trainer: {max_epochs: 3, precision: bf16-mixed, devices: 1}
seed_params: {seed: 7, workers: true}
"""

TOML_EXP = """
seed_params = {seed = 7, workers = true}

[task]
name = "ClassificationTask"
compute_loss_on_valid = false
[task.params]
backbone_name = "resnet18"
head_name = "ClassificationHead"
head_params = {num_classes = 10}

[[joint_loss.losses]]
name = "CrossEntropyLoss"
mapping = {input = "prediction", target = "target"}
tag = "ce"

[[optimization]]
optimizer = {name = "SGD", params = {lr = 0.1, momentum = 0.9}}
[optimization.scheduler]
name = "OneCycleLR"
params = {max_lr = 0.1, total_steps = 100}
pl_params = {interval = "step"}

[[data.TRAIN]]
dataset = {name = "Shapes", params = {num_samples = 64}, augment = [{name = "HorizontalFlip"}]}
dataloader = {batch_size = 8, shuffle = true, drop_last = true}

[[metrics]]
name = "Accuracy"
params = {task = "multiclass", num_classes = 10}
mapping = {preds = "prediction", target = "target"}
phases = ["VALID", "TEST"]

[trainer]
max_epochs = 3
precision = "bf16-mixed"
devices = 1
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def load_text(tmp_path: Path, text: str, overrides: list[str] = (), suffix: str = ".yml"):
    return load_experiment(write(tmp_path, f"exp{suffix}", text), overrides)


def messages(err: ConfigErrors | ConfigError) -> list[str]:
    return [str(e) for e in getattr(err, "errors", [err])]


# --- loading --------------------------------------------------------------------------------------


def test_yaml_and_toml_give_equal_experiments(tmp_path: Path) -> None:
    from_yaml = load_experiment(write(tmp_path, "exp.yml", YAML_EXP))
    from_toml = load_experiment(write(tmp_path, "exp.toml", TOML_EXP))
    assert from_yaml == from_toml
    assert from_yaml.name == "exp"
    assert from_yaml.metrics[0].phases == (Phase.VALID, Phase.TEST)
    assert from_yaml.optimization[0].scheduler.pl_params.interval == "step"
    assert from_yaml.data.TRAIN[0].dataloader.batch_size == 8
    assert from_yaml.trainer.precision == "bf16-mixed"


def test_experiment_is_frozen(tmp_path: Path) -> None:
    exp = load_text(tmp_path, YAML_EXP)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        exp.trainer = Trainer()  # type: ignore[misc]
    assert attrs.evolve(exp, resume_path="x.ckpt").resume_path == "x.ckpt"


def test_yaml_aliases_are_independent_after_overrides(tmp_path: Path) -> None:
    text = """
    task: {name: T}
    data:
      TRAIN: [{dataset: &ds {name: D, params: {n: 1}}}]
      VALID: [{dataset: *ds}]
    """
    exp = load_text(tmp_path, text, ["data.TRAIN.0.dataset.params.n=2"])
    assert exp.data.TRAIN[0].dataset.params == {"n": 2}
    assert exp.data.VALID[0].dataset.params == {"n": 1}


def test_missing_file_and_bad_suffix_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(OkcError, match="experiment file not found"):
        load_experiment(tmp_path / "nope.yml")
    with pytest.raises(OkcError, match=r"\.yml, \.yaml or \.toml"):
        load_experiment(write(tmp_path, "exp.json", "{}"))
    with pytest.raises(OkcError, match=r"exp\.yml:2:\d+: invalid YAML"):
        load_text(tmp_path, "task: {name: T}\n  bad: [1, 2\n")
    with pytest.raises(OkcError, match="top level must be a mapping"):
        load_text(tmp_path, "- 1\n- 2\n")


def test_yaml_tags_are_refused(tmp_path: Path) -> None:
    with pytest.raises(OkcError, match="invalid YAML"):
        load_text(tmp_path, "task: !!python/object/apply:os.system ['echo hi']\n")


# --- interpolation --------------------------------------------------------------------------------


def test_env_and_oc_env_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OKC_TEST_DIR", "/data/x")
    monkeypatch.delenv("OKC_UNSET", raising=False)
    text = """
    task: {name: T, params: {a: '${env:OKC_TEST_DIR}/a', b: '${oc.env:OKC_TEST_DIR}',
                              c: '${oc.env:OKC_UNSET,fallback}', d: '${env:OKC_UNSET,${env:OKC_TEST_DIR}}',
                              e: '${oc.env:OKC_UNSET,null}', f: '${oc.env:OKC_UNSET,8}'}}
    """
    params = load_text(tmp_path, text).task.params
    assert params == {
        "a": "/data/x/a",
        "b": "/data/x",
        "c": "fallback",
        "d": "/data/x",
        "e": None,
        "f": 8,
    }


def test_missing_env_names_key_and_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OKC_UNSET", raising=False)
    for resolver in ("oc.env", "env"):  # the message quotes what the file wrote
        with pytest.raises(ConfigError) as err:
            load_text(tmp_path, f"task: {{name: T, params: {{root: '${{{resolver}:OKC_UNSET}}'}}}}")
        assert str(err.value) == (
            f"task.params.root: environment variable OKC_UNSET is not set (used as "
            f"${{{resolver}:OKC_UNSET}}); set it, or give a default: ${{{resolver}:OKC_UNSET,value}}"
        )


def test_now_is_one_instant_per_load(tmp_path: Path) -> None:
    now = dt.datetime(2024, 5, 6, 7, 8, 9)
    path = write(
        tmp_path,
        "exp.yml",
        """
    task: {name: T}
    logger: {log_dir: /logs, timestamp: '${now:%Y-%m-%d}/${now:%H-%M-%S}'}
    """,
    )
    exp = load_experiment(path, now=now)
    assert exp.logger.timestamp == "2024-05-06/07-08-09"
    stamp = load_experiment(path).logger.timestamp
    assert re.fullmatch(r"\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", stamp)


def test_key_references_absolute_relative_and_typed(tmp_path: Path) -> None:
    text = """
    task: {name: T, params: {epochs: '${trainer.max_epochs}', dir: '${logger.log_dir}/${logger.experiment_name}',
                             sib: '${.epochs}'}}
    trainer: {max_epochs: 4, min_epochs: '${trainer.max_epochs}'}
    logger: {log_dir: /logs, experiment_name: exp}
    """
    exp = load_text(tmp_path, text, ["logger.log_dir=/elsewhere"])
    assert exp.task.params == {"epochs": 4, "dir": "/elsewhere/exp", "sib": 4}
    assert exp.trainer.min_epochs == 4


def test_interpolation_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"^task\.params\.a: interpolation \$\{nope\.x\}: no key 'nope\.x'"
    ):
        load_text(tmp_path, "task: {name: T, params: {a: '${nope.x}'}}")
    with pytest.raises(ConfigError, match="interpolation cycle"):
        load_text(
            tmp_path, "task: {name: T, params: {a: '${task.params.b}', b: '${task.params.a}'}}"
        )
    with pytest.raises(ConfigError, match=r"unknown resolver 'oc\.select'"):
        load_text(tmp_path, "task: {name: T, params: {a: '${oc.select:x}'}}")
    assert (
        load_text(tmp_path, r"task: {name: T, params: {a: '\${literal}'}}").task.params["a"]
        == "${literal}"
    )


# --- overrides ------------------------------------------------------------------------------------


def test_overrides_set_add_index_and_delete(tmp_path: Path) -> None:
    exp = load_text(
        tmp_path,
        YAML_EXP,
        [
            "trainer.accelerator=cpu",
            "data.TRAIN.0.dataloader.batch_size=64",
            "+mode=test",
            "trainer.max_epochs=null",
            "task.params.head_params={num_classes: 5}",
            "metrics.0.phases=[VALID]",
            "~seed_params",
            "++trainer.max_steps=12",
            "optimization.0.optimizer.params.lr=1e-3",
        ],
    )
    assert exp.trainer.accelerator == "cpu"
    assert exp.data.TRAIN[0].dataloader.batch_size == 64
    assert exp.mode == "test"
    assert exp.trainer.max_epochs is None
    assert exp.task.params["head_params"] == {"num_classes": 5}
    assert exp.metrics[0].phases == (Phase.VALID,)
    assert exp.seed_params is None
    assert exp.trainer.max_steps == 12
    assert exp.optimization[0].optimizer.params["lr"] == 1e-3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs", "override 'trainer.max_epochs': expected key=value"),
        (
            "data.TRAIN.5.dataloader.batch_size=1",
            "'data.TRAIN.5': index 5 out of range (the list has 1)",
        ),
        ("data.TRAIN.x.dataloader=1", "a list needs a numeric index, got 'x'"),
        ("+trainer.max_epochs=2", "'trainer.max_epochs' exists; use trainer.max_epochs=..."),
        ("trainer.max_epochs.x=1", "'trainer.max_epochs' is a int, not a mapping"),
        ("~trainer.nothing", "no key 'trainer.nothing' to delete"),
        ("trainer..x=1", "is not a dotted key path"),
    ],
)
def test_bad_overrides(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, YAML_EXP, [override])
    assert message in str(err.value)
    assert str(err.value).startswith(f"override '{override}'")


def test_override_of_unknown_key_is_caught_by_the_schema(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as err:
        load_text(tmp_path, YAML_EXP, ["trainer.max_epoch=5"])
    assert messages(err.value) == ["trainer.max_epoch: unknown key, did you mean 'max_epochs'?"]


# --- structuring errors ---------------------------------------------------------------------------


def test_issue_error_messages(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as err:
        load_text(tmp_path, YAML_EXP, ["trainer.max_epochs=ten", "+trainr.x=1"])
    assert messages(err.value) == [
        "trainer.max_epochs: expected int, got 'ten'",
        "trainr: unknown key, did you mean 'trainer'?",
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.TRAIN.0.dataloader.shuffle=maybe",
            "data.TRAIN.0.dataloader.shuffle: expected bool, got 'maybe'",
        ),
        (
            "data.TRAIN.0.dataloader.shufle=true",
            "data.TRAIN.0.dataloader.shufle: unknown key, did you mean 'shuffle'?",
        ),
        ("+data.TRIAN=[]", "data.TRIAN: unknown key, did you mean 'TRAIN'?"),
        ("trainer.precision=8", "trainer.precision: expected 64 | 32 | 16 | '64'"),
        (
            "trainer.accelerator=tpu",
            "trainer.accelerator: expected 'auto' | 'cpu' | 'gpu' | 'cuda', got 'tpu'",
        ),
        (
            "metrics.0.phases=[VALID, EVAL]",
            "metrics.0.phases.1: expected TRAIN | VALID | TEST | PREDICT, got 'EVAL'",
        ),
        ("~task.name", "task.name: required key is missing"),
        ("joint_loss.losses.0.mapping=5", "joint_loss.losses.0.mapping: expected mapping, got 5"),
        ("trainer=5", "trainer: expected a mapping, got 5"),
        (
            "optimization.0.scheduler.pl_params.interval=batch",
            "optimization.0.scheduler.pl_params.interval: expected 'step' | 'epoch', got 'batch'",
        ),
    ],
)
def test_structuring_errors_name_the_key_path(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigErrors) as err:
        load_text(tmp_path, YAML_EXP, [override])
    assert any(m.startswith(message) for m in messages(err.value)), messages(err.value)


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as err:
        load_text(tmp_path, YAML_EXP, ["trainer.max_epochs=x", "trainer.max_steps=y", "+foo=1"])
    assert len(err.value.errors) == 3


def test_seed_params_in_either_place_but_not_both(tmp_path: Path) -> None:
    exp = load_text(tmp_path, "task: {name: T, seed_params: {seed: 3}}")
    assert exp.seed == exp.task.seed_params and exp.seed.seed == 3
    with pytest.raises(ConfigError, match=r"task\.seed_params: seed_params is also set"):
        load_text(tmp_path, "task: {name: T, seed_params: {seed: 3}}\nseed_params: {seed: 4}")


# --- round trip -----------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    exp = load_text(tmp_path, YAML_EXP)
    data = exp.to_dict()
    assert Experiment.from_dict(data) == exp
    # and it is plain data: YAML can write it and read it back to the same experiment
    assert Experiment.from_dict(yaml.safe_load(yaml.safe_dump(data))) == exp


@settings(max_examples=60, deadline=None)
@given(
    max_epochs=st.none() | st.integers(1, 10_000),
    clip=st.none() | st.floats(0.01, 100, allow_nan=False),
    precision=st.sampled_from([32, 16, "16-mixed", "bf16-mixed", "bf16"]),
    limit=st.none() | st.integers(1, 50) | st.floats(0.01, 1.0),
    devices=st.sampled_from(["auto", 1, 2, (0, 1)]),
    compile_=st.sampled_from(["auto", True, False]),
)
def test_trainer_round_trip_property(max_epochs, clip, precision, limit, devices, compile_) -> None:
    data = {
        "task": {"name": "T"},
        "trainer": {
            "max_epochs": max_epochs, "gradient_clip_val": clip, "precision": precision,
            "limit_train_batches": limit, "devices": devices, "compile": compile_,
        },
    }  # fmt: skip
    exp = experiment_from_data(data)
    assert Experiment.from_dict(exp.to_dict()) == exp
    assert exp.trainer.precision == precision and exp.trainer.devices == devices


# --- TorchOk compatibility ------------------------------------------------------------------------


def test_torchok_style_file_loads(tmp_path: Path) -> None:
    text = """
    hydra:
      run:
        dir: &logs_dir '${logger.log_dir}/${logger.experiment_name}/${logger.timestamp}'
    task:
      name: ClassificationTask
      params: {backbone_name: resnet18, inputs: [{shape: [3, &height 32, &width 32], dtype: &input_dtype float32}]}
    data:
      TRAIN:
        - dataloader: {batch_size: 128, num_workers: 8, drop_last: true, shuffle: true, persistent_workers: true}
          dataset:
            name: CIFAR10
            params: {input_dtype: *input_dtype, train: true, download: true,
                     data_folder: '${oc.env:HOME}/.cache/torchok/data/cifar10'}
            transform: [{name: Resize, params: {height: *height, width: *width}}, {name: ToTensorV2}]
    logger:
      name: TensorBoardLogger
      log_dir: '${oc.env:HOME}/.cache/torchok/logs/cifar10'
      experiment_name: cifar10
      timestamp: '${now:%Y-%m-%d}/${now:%H-%M-%S}'
    callbacks:
      - name: ModelCheckpoint
        params: {dirpath: *logs_dir, monitor: valid/Accuracy, save_top_k: 1, save_last: true, mode: max}
    trainer: {accelerator: gpu, max_epochs: 30, log_every_n_steps: 100, precision: 16}
    """
    exp = load_text(tmp_path, text, ["trainer.accelerator='cpu'", "+mode=test"])
    home = str(Path.home())
    assert exp.data.TRAIN[0].dataset.params["data_folder"] == f"{home}/.cache/torchok/data/cifar10"
    dirpath = exp.callbacks[0].params["dirpath"]
    assert dirpath.startswith(f"{home}/.cache/torchok/logs/cifar10/cifar10/20")
    assert exp.trainer.accelerator == "cpu" and exp.mode == "test"


def _spec_yaml_blocks() -> list[str]:
    """Every ``.. code-block:: yaml`` body in the spec, dedented."""
    text = SPEC.read_text()
    blocks = []
    for match in re.finditer(r"\.\. code-block:: yaml\n\n((?:[ \t]+.*\n|\n)+)", text):
        blocks.append(textwrap.dedent(match.group(1)))
    return blocks


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


# Anchors the spec's blocks use but define in other blocks (or, for *logs_dir, nowhere).
SPEC_ANCHORS = {"height": 224, "width": 224, "input_dtype": "float32", "logs_dir": "/tmp/logs"}


def _with_anchors(block: str) -> str:
    """``block`` preceded by definitions of the anchors it uses but does not define."""
    used = set(re.findall(r"\*(\w+)", block)) - set(re.findall(r"&(\w+)", block))
    items = ", ".join(f"&{a} {SPEC_ANCHORS[a]}" for a in sorted(used))
    return f"_anchors: [{items}]\n{block}"


SECTIONS = {
    "task", "joint_loss", "optimization", "data", "metrics", "callbacks", "trainer", "logger",
    "load_checkpoint", "resume_path", "seed_params",
}  # fmt: skip


@pytest.mark.skipif(not SHARED_SPEC.is_file(), reason="no shared spec beside this clone")
def test_vendored_spec_is_current() -> None:
    assert SPEC.read_text() == SHARED_SPEC.read_text()


def test_every_whole_section_block_of_the_spec_loads() -> None:
    blocks = [_with_anchors(b) for b in _spec_yaml_blocks()]
    blocks = [b for b in blocks if yaml.safe_load(b).keys() - {"_anchors"} <= SECTIONS]
    assert len(blocks) >= 10, "the spec's YAML blocks were not found"
    for block in blocks:
        data = yaml.safe_load(block)
        data.pop("_anchors")
        exp = experiment_from_data(_merge({"task": {"name": "ClassificationTask"}}, data))
        assert exp.to_dict()  # structured without errors
        for key in data:
            assert getattr(exp, key) not in (None, ()), key


def test_spec_load_checkpoint_and_seed_blocks_mean_what_the_spec_says() -> None:
    blocks = [yaml.safe_load(b) for b in _spec_yaml_blocks() if b.startswith("task:")]
    exps = [experiment_from_data(_merge({"task": {"name": "T"}}, b)) for b in blocks]
    excluding = next(
        e for e in exps if e.task.load_checkpoint and e.task.load_checkpoint.exclude_keys
    )
    assert excluding.task.load_checkpoint.exclude_keys == ("head.linear.3",)
    assert excluding.task.load_checkpoint.overridden_name2ckpt_path["head.linear.2"].endswith(
        "path.ckpt"
    )
    seeded = next(e for e in exps if e.task.seed_params)
    assert seeded.seed.seed == 42 and seeded.seed.workers is True
