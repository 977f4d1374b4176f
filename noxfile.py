"""nox sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s perf``.

Sessions reuse their virtualenv (a fresh one costs ~2 minutes and ~5.7 GB with torch).
"""

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", "-q", "-n", "2", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".", "ruff", "import-linter")
    session.run("ruff", "check", "okc", "tests", "perf", "noxfile.py")
    session.run("ruff", "format", "--check", "okc", "tests", "perf", "noxfile.py")
    session.run("lint-imports")


@nox.session
def perf(session: nox.Session) -> None:
    session.install("-e", ".")
    session.install("-r", "perf/requirements.txt")
    for script in (
        "perf/bench_train.py",
        "perf/bench_data.py",
        "perf/bench_step.py",
        "perf/bench_compile.py",
    ):
        session.run("python", script, *session.posargs)
