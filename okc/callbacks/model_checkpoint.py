"""``ModelCheckpoint``: Lightning's parameters and file names, okc's atomic full-state files.

Saves at epoch ends (every ``every_n_epochs``) and, with ``every_n_train_steps``, after optimizer
steps; keeps the ``save_top_k`` best by ``monitor`` (all with -1, none with 0), and ``last.ckpt``
with ``save_last``. ``keep_latest_k`` (okc's) bounds the disk a long run with frequent saves
uses: of the checkpoints kept by ``save_top_k``, only the ``k`` newest stay, and the best one.
Under FSDP2 each checkpoint is a folder of per-rank shards (``okc.engine.sharded``), removed
whole. Ctrl-C / SIGTERM during fit writes ``last.ckpt`` at the step where the run stopped, so
``resume_path`` continues exactly from there.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from okc.engine.hooks import Callback, RunView
from okc.errors import ConfigError
from okc.registry import CALLBACKS

_FIELD = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")


@CALLBACKS.register
class ModelCheckpoint(Callback):
    main_process_only = False  # saving gathers state on every rank; writing is main-only

    def __init__(
        self,
        *,
        dirpath: str | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
        save_top_k: int = 1,
        save_last: bool | None = None,
        save_weights_only: bool = False,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        auto_insert_metric_name: bool = True,
        verbose: bool = False,
        keep_latest_k: int | None = None,
    ) -> None:
        if save_top_k < -1:
            raise ValueError(f"save_top_k must be >= -1, got {save_top_k}")
        if keep_latest_k is not None and keep_latest_k < 1:
            raise ValueError(
                f"keep_latest_k must be >= 1 (or null for no bound), got {keep_latest_k}"
            )
        if monitor is None and save_top_k not in (-1, 0, 1):
            raise ValueError("save_top_k > 1 needs a monitor to rank checkpoints by")
        self.dirpath = Path(dirpath).expanduser() if dirpath else None
        self.filename = filename
        self.monitor, self.mode = monitor, mode
        self.save_top_k, self.save_last = save_top_k, save_last
        self.save_weights_only = save_weights_only
        self.every_n_epochs = every_n_epochs if every_n_epochs is not None else 1
        self.every_n_train_steps = every_n_train_steps
        self.auto_insert_metric_name = auto_insert_metric_name
        self.verbose = verbose
        self.keep_latest_k = keep_latest_k
        self.best_k: dict[str, float] = {}  # path -> score
        self.written: list[str] = []  # the kept checkpoints, oldest first (for keep_latest_k)
        self.best_model_path: Path | None = None
        self.last_model_path: Path | None = None
        self._restored_dirpath: Path | None = None

    def setup(self, run: RunView, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = run.run_dir / "checkpoints"
        if self._restored_dirpath is not None and self._restored_dirpath != self.dirpath:
            # A resumed run writing elsewhere keeps ranking from scratch: never delete the files
            # of the run it resumed (Lightning does the same).
            self.best_k.clear()
            self.written.clear()
        self._restored_dirpath = None

    # --- when -------------------------------------------------------------------------------------

    def on_train_batch_end(self, run: RunView, logs: Mapping[str, float] | None) -> None:
        n = self.every_n_train_steps
        if n and run.global_step % n == 0:
            self._save(run, dict(run.logged), due_top_k=self.monitor is None)

    def on_epoch_end(self, run: RunView, metrics: Mapping[str, float]) -> None:
        if self.every_n_train_steps and self.every_n_epochs == 1:
            # step-based saving replaces epoch saving, except for `last` (Lightning's rule)
            self._save_last(run)
            return
        if self.every_n_epochs and (run.epoch + 1) % self.every_n_epochs == 0:
            self._save(run, metrics, due_top_k=True)

    def on_interrupt(self, run: RunView) -> None:
        path = self._path_for("last", run, {})
        self._write(run, path, weights_only=False)
        self.last_model_path = path

    # --- what -------------------------------------------------------------------------------------

    def _write(self, run: RunView, path: Path, *, weights_only: bool) -> None:
        """Every checkpoint this callback writes goes through here (subclasses add files)."""
        run.save_checkpoint(path, weights_only=weights_only)

    def _remove(self, path: Path) -> None:
        """A checkpoint that fell out of the top k (subclasses remove their files with it)."""
        if path.is_dir():  # a sharded checkpoint
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def _save(self, run: RunView, metrics: Mapping[str, float], *, due_top_k: bool) -> None:
        if due_top_k and self.save_top_k != 0:
            score = self._score(run, metrics)
            if self.monitor is None or score is not None:
                self._save_top_k(run, metrics, score)
        self._save_last(run)

    def _save_last(self, run: RunView) -> None:
        if self.save_last:
            path = self._path_for("last", run, {})
            self._write(run, path, weights_only=self.save_weights_only)
            self.last_model_path = path

    def _score(self, run: RunView, metrics: Mapping[str, float]) -> float | None:
        if self.monitor is None:
            return None
        if self.monitor in metrics:
            return float(metrics[self.monitor])
        phase = self.monitor.split("/", 1)[0]
        if phase == "train" or any(k.startswith(f"{phase}/") for k in metrics):
            known = ", ".join(sorted(metrics)) or "nothing"
            raise ConfigError(
                f"{self.config_path}.monitor",
                f"'{self.monitor}' was not logged; logged this epoch: {known}",
            )
        return None  # its phase did not run this epoch (e.g. check_val_every_n_epoch > 1)

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _save_top_k(self, run: RunView, metrics: Mapping[str, float], score: float | None) -> None:
        path = self._path_for(self.filename, run, metrics)
        if self.monitor is None or self.save_top_k == -1:
            if self.monitor is None and self.save_top_k == 1:
                for old in list(self.best_k):
                    if old != str(path):
                        self._remove(Path(old))
                self.best_k.clear()
            self._write(run, path, weights_only=self.save_weights_only)
            self.best_k[str(path)] = score if score is not None else math.nan
            self.best_model_path = path if score is None else self._best_path()
            self._keep_latest(path)
            return
        assert score is not None
        if math.isnan(score):
            return
        if len(self.best_k) >= self.save_top_k:
            worst = max(self.best_k, key=lambda p: self.best_k[p] * self._sign())
            if not self._better(score, self.best_k[worst]):
                return
            del self.best_k[worst]
            if worst != str(path):
                self._remove(Path(worst))
        self._write(run, path, weights_only=self.save_weights_only)
        self.best_k[str(path)] = score
        self.best_model_path = self._best_path()
        self._keep_latest(path)
        if self.verbose:
            print(f"saved {path} ({self.monitor}={score:.6g})")

    def _keep_latest(self, path: Path) -> None:
        """Remove kept checkpoints older than the ``keep_latest_k`` newest, except the best."""
        self.written = [p for p in self.written if p in self.best_k and p != str(path)]
        self.written.append(str(path))
        if self.keep_latest_k is None:
            return
        best = str(self.best_model_path) if self.monitor is not None else None
        old = [p for p in self.written[: -self.keep_latest_k] if p != best]
        for p in old:
            self._remove(Path(p))
            del self.best_k[p]
        self.written = [p for p in self.written if p not in old]

    def _sign(self) -> float:
        return 1.0 if self.mode == "min" else -1.0

    def _best_path(self) -> Path:
        return Path(min(self.best_k, key=lambda p: self.best_k[p] * self._sign()))

    def _path_for(self, template: str | None, run: RunView, metrics: Mapping[str, float]) -> Path:
        assert self.dirpath is not None, "setup() sets dirpath"
        if template == "last":
            return self.dirpath / "last.ckpt"
        template = template or "epoch={epoch}-step={step}"
        values: dict[str, Any] = {"epoch": run.epoch, "step": run.global_step, **metrics}

        def fill(m: re.Match) -> str:
            key, fmt = m.group(1), m.group(2)
            if key not in values:
                raise ConfigError(
                    f"{self.config_path}.filename",
                    f"'{{{key}}}' is neither epoch, step nor a logged value",
                )
            text = format(values[key], fmt or "")
            return f"{key}={text}" if self.auto_insert_metric_name and "=" not in template else text

        name = _FIELD.sub(fill, template).replace("/", "_")
        return self.dirpath / f"{name}.ckpt"

    # --- state ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "dirpath": str(self.dirpath) if self.dirpath else None,
            "best_k": dict(self.best_k),
            "written": list(self.written),
            "best_model_path": str(self.best_model_path) if self.best_model_path else None,
            "last_model_path": str(self.last_model_path) if self.last_model_path else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_k = dict(state.get("best_k", {}))
        self.written = list(state.get("written", self.best_k))
        self._restored_dirpath = Path(state["dirpath"]) if state.get("dirpath") else None
        best, last = state.get("best_model_path"), state.get("last_model_path")
        self.best_model_path = Path(best) if best else None
        self.last_model_path = Path(last) if last else None
