"""``okc plot``: one PNG of a run's curves (losses, metrics, learning rate), runs overlaid.

One panel per quantity against the optimizer step: ``loss`` first, then each loss tag and
metric (train, valid and test in the same panel), the learning rates last. Colour tells runs
apart, line style phases (train solid, valid dashed, test dotted); per-step values
(``train/loss_step``) are thin and faint under the epoch means. Needs matplotlib
(``pip install 'okc[plot]'``); drawn without pyplot, so it never touches a notebook's backend.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from okc.errors import OkcError
from okc.loggers.packages import installed
from okc.reports.history import RunHistory

STYLES = {"train": "-", "valid": "--", "test": ":", "predict": "-."}
LR = "learning rate"
SWEEP_OVERRIDES = "overrides.yml"  # a sweep run's overrides, written by okc.sweep
_DATALOADER = re.compile(r"_dataloader_\d+$")


def panel_of(key: str) -> str:
    """The panel a logged key is drawn in: ``valid/Accuracy`` → ``Accuracy``, ``lr-AdamW`` →
    ``learning rate``, ``train/loss_step`` → ``loss``."""
    if key.startswith("lr-"):
        return LR
    _, _, name = key.rpartition("/")
    return _DATALOADER.sub("", name.removesuffix("_step"))


def panels(runs: Sequence[RunHistory]) -> list[str]:
    """Panel names in drawing order: loss, then alphabetical, learning rate last."""
    names = {panel_of(k) for run in runs for k in run.series}
    middle = sorted(names - {"loss", LR}, key=str.lower)
    return [n for n in ("loss",) if n in names] + middle + [n for n in (LR,) if n in names]


def plot_runs(runs: Sequence[RunHistory], output: str | Path) -> Path:
    """Draw ``runs`` into the PNG ``output``; returns its path."""
    if not installed("matplotlib"):
        raise OkcError("okc plot needs matplotlib, which is not installed: "
                       "pip install 'okc[plot]'")  # fmt: skip
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = sweep_labelled(runs)
    names = panels(runs)
    if not names:
        raise OkcError("nothing to plot: the runs logged no values yet "
                       f"({', '.join(str(r.run_dir) for r in runs)})")  # fmt: skip
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    figure = Figure(figsize=(5.2 * cols, 3.6 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        _draw_panel(ax, name, runs)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    if len(runs) > 1:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=f"C{i % 10}", linewidth=2) for i in range(len(runs))]
        figure.legend(handles, [r.label for r in runs], loc="outside lower center",
                      ncols=min(len(runs), 4), fontsize=8)  # fmt: skip
    output = Path(output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    return output


def sweep_labelled(runs: Sequence[RunHistory]) -> list[RunHistory]:
    """Runs of a sweep (``okc fit -m``) labelled by their overrides (``#1 lr=0.01``): what tells
    them apart, where their folders' names (``0``, ``1``, ...) do not."""
    import attrs
    import yaml

    labelled = []
    for run in runs:
        path = run.run_dir / SWEEP_OVERRIDES
        swept = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        if isinstance(swept, list) and swept:
            run = attrs.evolve(run, label=f"#{run.run_dir.name} {' '.join(map(_short, swept))}")
        labelled.append(run)
    return labelled


def _short(override: object) -> str:
    """``optimization.0.optimizer.params.lr=0.01`` → ``lr=0.01``."""
    key, eq, value = str(override).partition("=")
    return f"{key.rpartition('.')[2]}{eq}{value}"


def _draw_panel(ax, name: str, runs: Sequence[RunHistory]) -> None:
    """One quantity; with several runs the legend names the keys (in grey, by line style) and
    the figure's legend the runs (by colour)."""
    from matplotlib.lines import Line2D

    keys: dict[str, dict] = {}
    for i, run in enumerate(runs):
        for key in sorted(k for k in run.series if panel_of(k) == name):
            steps, values = zip(*run.series[key], strict=True)
            style = _style(key, len(steps))
            ax.plot(steps, values, color=f"C{i % 10}", label=key, **style)
            keys[key] = style
    if len(runs) > 1:
        handles = [Line2D([], [], color="0.3", **style) for style in keys.values()]
        ax.legend(handles, list(keys), fontsize=7, handlelength=3)
    else:
        ax.legend(fontsize=7, handlelength=3)
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)


def _style(key: str, num_points: int) -> dict:
    """Line style by phase; per-step values thin and faint; markers on sparse epoch values."""
    phase = key.partition("/")[0] if "/" in key else "train"
    per_step = key.endswith("_step")
    return {
        "linestyle": STYLES.get(phase, "-"),
        "linewidth": 0.8 if per_step else 1.6,
        "alpha": 0.35 if per_step else 1.0,
        "marker": "o" if not per_step and num_points <= 30 else None,
        "markersize": 3,
    }


def default_output(runs: Sequence[RunHistory]) -> Path:
    """``curves.png`` in the run folder (one run) or in the folder the runs share."""
    if len(runs) == 1:
        return runs[0].run_dir / "curves.png"
    return Path(os.path.commonpath([r.run_dir.resolve() for r in runs])) / "curves.png"
