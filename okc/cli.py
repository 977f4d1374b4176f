"""The ``okc`` command: argument parsing and printing only; the work is library calls in okc.api.

    okc fit|validate|test|predict|export|check|find-lr EXPERIMENT [key=value ...] [--debug]
    okc fit EXPERIMENT -m key=a,b key2=c,d                  (a sweep: the grid, one run each)
    okc run EXPERIMENT [+mode=train|test|predict|find_lr]   (TorchOk's run modes)
    python -m okc -cp DIR -cn NAME [key=value ...]          (TorchOk's Hydra-style invocation)
    okc plot RUN_DIR [RUN_DIR ...] [--output curves.png]    (a PNG of the runs' curves)
    okc list [KIND [PATTERN]] [--all]                       (the component names okc knows)

User errors print one short block and exit 2; ``--debug`` shows the traceback instead. A fit
that a signal stopped (SIGTERM, SIGUSR1: ``trainer.preempt_signals``) saves a checkpoint and
exits 75 (EX_TEMPFAIL: run the same command again, with ``resume_path: auto``, to continue);
Ctrl-C exits 130 (docs/distributed.md, Preemption).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from okc import __version__
from okc.errors import ConfigErrors, OkcError

COMMANDS = {
    "fit": "train the task on TRAIN, validating on VALID",
    "validate": "run the VALID phase and print its metrics",
    "test": "run the TEST phase and print its metrics",
    "predict": "run the PREDICT phase and write predictions to a file",
    "export": "export the model to ONNX and/or TorchScript",
    "check": "validate the experiment without building it and print it resolved",
    "find-lr": "learning-rate range test: suggest a learning rate, write the loss curve",
    "run": "TorchOk style: run the experiment's `mode` (train by default)",
}
TOOLS = {
    "plot": "draw the curves of runs (losses, metrics, learning rate) into a PNG",
    "list": "list the component names of a kind (backbones, losses, ...) with their params",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="okc",
        description="okc: config-driven computer-vision training.",
        epilog="exit status: 0 done, 1 failed, 2 a user error, 75 fit stopped by a signal with a "
        "checkpoint saved (rerun with resume_path=auto to continue), 130 Ctrl-C",
    )
    parser.add_argument("--version", action="version", version=f"okc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("experiment", type=Path, help="experiment file (.yml, .yaml or .toml)")
        p.add_argument("overrides", nargs="*", help="key=value, +key=value, ~key")
        p.add_argument("--debug", action="store_true", help="show tracebacks")
        if name in ("validate", "test", "predict", "export"):
            p.add_argument("--checkpoint", type=Path,
                           help="weights to use: an okc checkpoint, or best / last (that "
                           "checkpoint of the experiment's latest run)")  # fmt: skip
        if name in ("predict", "export"):
            p.add_argument("--output", type=Path, help="where to write")
        if name == "export":
            p.add_argument(
                "--format", choices=("onnx", "torchscript", "pt2", "all"), default="onnx",
                dest="fmt", help="all: onnx and torchscript; pt2: a torch.export + AOTInductor "
                "package (compiled ahead of time: minutes on a CPU)",
            )  # fmt: skip
            p.add_argument("--quantize", choices=("int8",),
                           help="also write a statically quantized ONNX file (calibrated on "
                           "VALID); report its accuracy and each format's latency")  # fmt: skip
            p.add_argument("--calibration-batches", type=int, default=8, metavar="N",
                           help="VALID batches that calibrate int8 ranges (default 8)")  # fmt: skip
        if name in ("find-lr", "run"):
            _find_lr_options(p)
        if name in ("fit", "run"):
            p.add_argument("-m", "--multirun", action="store_true",
                           help="sweep: run the grid of the overrides' comma lists (Hydra's "
                           "syntax: key=a,b  key=range(1,4)  key=choice(a,b)), one run after "
                           "another, then print the table of runs")  # fmt: skip
    _tool_parsers(sub)
    return parser


def _tool_parsers(sub: Any) -> None:
    plot = sub.add_parser("plot", help=TOOLS["plot"], description=TOOLS["plot"])
    plot.add_argument(
        "runs", nargs="+", type=Path,
        help="run folders, folders above runs (every run below is drawn), or experiment files "
        "(their latest run)",
    )  # fmt: skip
    plot.add_argument("--output", type=Path,
                      help="the PNG (default: curves.png in the run folder, or in the folder "
                      "the runs share)")  # fmt: skip
    plot.add_argument("--debug", action="store_true", help="show tracebacks")
    ls = sub.add_parser("list", help=TOOLS["list"], description=TOOLS["list"])
    ls.add_argument("kind", nargs="?", help="backbones, necks, poolings, heads, losses, metrics, "
                    "augmentations, datasets, samplers, callbacks, loggers, tasks, optimizers, "
                    "schedulers, ... (none: every kind with its counts)")  # fmt: skip
    ls.add_argument("pattern", nargs="?",
                    help="shell-style ('resnet*'; a plain word matches anywhere); also lists "
                    "the library names (timm, torchmetrics, ...) that match")  # fmt: skip
    ls.add_argument("--all", action="store_true", dest="library",
                    help="also list every library name (thousands for timm)")  # fmt: skip
    ls.add_argument("--import", action="append", default=[], dest="imports", metavar="MODULE",
                    help="import a module of your own components first")  # fmt: skip
    ls.add_argument("--debug", action="store_true", help="show tracebacks")


def _find_lr_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-lr", type=float, default=1e-8, help="first lr of the sweep")
    p.add_argument("--max-lr", type=float, default=1.0, help="last lr of the sweep")
    p.add_argument("--num-steps", type=int, default=100, help="optimizer steps of the sweep")
    p.add_argument(
        "--early-stop-threshold", type=float, default=4.0,
        help="stop when the smoothed loss exceeds this many times its minimum",
    )  # fmt: skip
    p.add_argument("--output", type=Path, help="where to write (find-lr: the curve, .csv/.png)")


def _hydra_argv(argv: list[str]) -> list[str]:
    """Turn TorchOk's ``-cp DIR -cn NAME [overrides]`` into ``run DIR/NAME.yaml [overrides]``.

    Hydra's spellings are accepted (``-cp DIR``, ``--config-path DIR``, ``--config-path=DIR``);
    a relative ``-cp`` is relative to the working folder (TorchOk's, to its package folder).
    """
    short = {"-cp": "cp", "--config-path": "cp", "-cn": "cn", "--config-name": "cn"}
    opts: dict[str, str] = {}
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        flag, eq, value = arg.partition("=")
        if flag in short:
            opts[short[flag]] = value if eq else next(it, "")
        else:
            rest.append(arg)
    folder, name = Path(opts.get("cp", ".")), opts.get("cn", "")
    candidates = [folder / name] + [folder / f"{name}{s}" for s in (".yaml", ".yml", ".toml")]
    found = next((c for c in candidates if c.is_file()), candidates[1])
    return ["run", str(found), *rest]


def _print_error(err: OkcError) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if isinstance(err, ConfigErrors) and len(err.errors) > 1:
        console.print(Text.assemble(("error: ", "bold red"), f"{len(err.errors)} problems:"))
        for e in err.errors:
            console.print(Text(f"  {e}"))
    else:
        console.print(Text.assemble(("error: ", "bold red"), str(err)))


def _run(args: argparse.Namespace) -> int:
    from okc import api

    if args.command == "plot":
        print(f"curves written to {api.plot(*args.runs, output=args.output)}")
        return 0
    if args.command == "list":
        from okc.reports.render import print_kinds, print_listing

        if args.kind is None:
            print_kinds()
        else:
            print_listing(api.list_components(args.kind, args.pattern, library=args.library,
                                              imports=args.imports))  # fmt: skip
        return 0
    if getattr(args, "multirun", False):
        return _sweep(args)
    exp = api.load_experiment(args.experiment, args.overrides)
    if args.command == "check":
        return _check(exp, args.experiment)
    command = (exp.mode or "train") if args.command == "run" else args.command
    checkpoint, output = getattr(args, "checkpoint", None), getattr(args, "output", None)
    from okc.engine.cluster import detect

    main_process = detect(exp.trainer).rank == 0  # under torchrun or srun, print once
    if command in ("fit", "train"):
        start = time.monotonic()
        result = api.fit(exp)
        if not main_process:
            return 0
        _print_fit_summary(api, result, time.monotonic() - start)
        print(f"run folder: {result.run_dir}")
        if result.best_checkpoint:
            print(f"best checkpoint: {result.best_checkpoint}")
        if result.last_checkpoint:
            print(f"last checkpoint: {result.last_checkpoint}")
    elif command in ("validate", "test"):
        metrics = getattr(api, command)(exp, checkpoint=checkpoint)
        if main_process:
            _print_metrics(metrics)
    elif command == "predict":
        path = api.predict(exp, checkpoint=checkpoint, output=output)
        print(f"predictions written to {path}")
    elif command == "export":
        written = api.export(exp, checkpoint=checkpoint, output=output, fmt=args.fmt,
                             quantize=args.quantize,
                             calibration_batches=args.calibration_batches)  # fmt: skip
        for path in written:
            print(f"exported {path}")
        for path in written:
            if path.name.endswith(".int8.json"):
                _print_int8_report(path)
    elif command in ("find-lr", "find_lr"):
        _find_lr(api, exp, args, main_process=main_process)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    """``-m``: the runs one after another, then their table; status 1 when a run failed."""
    from okc.sweep import print_table, run_sweep

    result = run_sweep(args.experiment, args.overrides, command=args.command, debug=args.debug)
    print_table(result)
    return 1 if any(r.status == "failed" for r in result.runs) else 0


def _find_lr(api: Any, exp: Any, args: argparse.Namespace, *, main_process: bool) -> None:
    result = api.find_lr(
        exp, min_lr=args.min_lr, max_lr=args.max_lr, num_steps=args.num_steps,
        early_stop_threshold=args.early_stop_threshold, output=args.output,
    )  # fmt: skip
    if not main_process:
        return
    print(f"find-lr: {len(result.lrs)} steps, {result.stop_reason}")
    if result.suggestion is None:
        print("no suggestion: the smoothed loss did not fall over the sweep (widen it)")
    else:
        print(f"suggested learning rate: {result.suggestion:.3g} (steepest fall of the loss)")
    print(f"loss curve: {result.csv}" + (f", {result.png}" if result.png else ""))
    if result.note:
        print(f"note: {result.note}")


def _check(exp: Any, source: Path) -> int:
    import yaml

    from okc import api

    text = yaml.safe_dump(exp.to_dict(), sort_keys=False, width=2**16)
    errors = api.check(exp)
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.syntax import Syntax

        console = Console(soft_wrap=True)
        console.print(Syntax(text, "yaml", word_wrap=True))
    else:  # piped or redirected: the text as is, never cut to a terminal's width
        sys.stdout.write(text)
    if errors:
        raise ConfigErrors(errors)
    print(f"ok: {source} is valid; every component name resolves", flush=True)
    return 0


def _print_fit_summary(api: Any, result: Any, seconds: float) -> None:
    """Best and last value of every loss and metric, and how long the run took."""
    from okc.reports.render import print_summary

    try:
        rows = api.summarize(result.run_dir)
    except OkcError as err:  # the run itself succeeded: say why there is no table
        print(f"no summary: {err}")
        return
    print_summary(rows, seconds=seconds, steps=result.global_step, epochs=result.epochs)


def _print_int8_report(path: Path) -> None:
    """The int8 file's VALID check against fp32 and each format's latency."""
    import json

    from rich.console import Console
    from rich.table import Table

    report = json.loads(path.read_text(encoding="utf-8"))
    valid = report["valid"]
    console = Console()
    if valid["fp32_accuracy"] is not None:
        console.print(f"VALID top-1 ({valid['num_samples']} images): fp32 "
                      f"{100 * valid['fp32_accuracy']:.2f} %, int8 "
                      f"{100 * valid['int8_accuracy']:.2f} %, drop "
                      f"{valid['drop_points']:.2f} points", highlight=False)  # fmt: skip
    console.print(f"int8 agrees with fp32 on {100 * valid['agreement']:.2f} % of decisions",
                  highlight=False)  # fmt: skip
    latency = report["latency_ms"]
    sizes = sorted({int(b) for by_batch in latency.values() for b in by_batch})
    table = Table("latency (median ms)", *(f"batch {b}" for b in sizes))
    for name, by_batch in latency.items():
        table.add_row(name, *(f"{by_batch[str(b)]:.2f}" for b in sizes))
    console.print(table)


def _print_metrics(metrics: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("metric", "value")
    for key, value in sorted(metrics.items()):
        table.add_row(key, f"{value:.6g}")
    Console().print(table)


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.formatwarning = _format_warning  # one line per warning, no source excerpt
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a.partition("=")[0] in ("-cp", "-cn", "--config-path", "--config-name") for a in argv):
        argv = _hydra_argv(argv)
    parser = _parser()
    # Options may come after the overrides (`okc fit x.yml a=1 --debug b=2`).
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command in TOOLS and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command not in TOOLS:
        args.overrides = [*args.overrides, *(e for e in extra if e not in unknown)]
    try:
        return _run(args)
    except OkcError as err:
        if args.debug:
            raise
        _print_error(err)
        return getattr(err, "exit_code", 2)  # 2: a user error; a crashed rank says 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
