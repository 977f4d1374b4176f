"""``okc check`` as a run's first step: every problem at once, the rest of task.params checked
under an unknown task, the CPU half-precision warning, and okc.check / okc.export staying the
API functions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import okc
from okc.errors import ConfigErrors


def test_an_unknown_task_still_checks_the_model_keys(tiny_exp) -> None:
    exp = tiny_exp("task.name=SegmentationTsk", "task.params.head_params.num_clases=4",
                   "task.params.pooling_name=Poling")  # fmt: skip
    errors = [str(e) for e in okc.check(exp)]
    assert errors[0].startswith("task.name: unknown task 'SegmentationTsk'")
    assert "task.params.pooling_name: unknown pooling 'Poling', did you mean 'Pooling'?" in errors
    assert any(e.startswith("task.params.head_params.num_clases:") for e in errors)


def test_fit_reports_every_problem_before_building(tiny_exp, tmp_path: Path) -> None:
    exp = tiny_exp("optimization.0.optimizer.params.lrr=0.1", "metrics.0.mapping.preds=logits",
                   "+callbacks=[{name: EarlyStoping}]")  # fmt: skip
    with pytest.raises(ConfigErrors) as err:
        okc.fit(exp)
    paths = [e.path for e in err.value.errors]
    assert paths == ["metrics.0.mapping.preds", "optimization.0.optimizer.params.lrr",
                     "callbacks.0.name"]  # fmt: skip
    assert not (tmp_path / "logs").exists()  # nothing was built, no run folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="the warning is about CPUs")
def test_half_precision_on_a_cpu_warns(tiny_exp) -> None:
    with pytest.warns(UserWarning, match=r"trainer\.precision=16-mixed on a CPU is slow"):
        okc.check(tiny_exp("trainer.precision=16-mixed"))
    with pytest.warns(UserWarning, match=r"trainer\.precision=16 on a CPU"):
        okc.check(tiny_exp("trainer.precision=16", "trainer.accelerator=cpu"))


def test_api_functions_survive_their_modules_being_imported() -> None:
    """A submodule ``okc.check`` or ``okc.export`` would replace the function of that name on
    the package the moment it is imported; okc's modules are ``checks`` and ``exports``."""
    code = (
        "import okc, okc.checks, okc.exports, okc.callbacks, inspect; "
        "assert inspect.isfunction(okc.check) and inspect.isfunction(okc.export); "
        "assert inspect.isfunction(okc.find_lr)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
