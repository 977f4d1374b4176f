"""Optional packages a logger needs, and the error that names the extra to install."""

from __future__ import annotations

import importlib.util

from okc.errors import OkcError

# package to import → the okc extra that installs it
EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "matplotlib": "plot"}


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def missing_package(package: str, *, what: str) -> str:
    """Why ``what`` (a logger name, a feature) cannot run without ``package``."""
    extra = EXTRAS.get(package)
    how = f"pip install 'okc[{extra}]'" if extra else f"pip install {package}"
    return f"{what} needs the {package} package, which is not installed: {how}"


def require(package: str, *, what: str) -> None:
    if not installed(package):
        raise OkcError(missing_package(package, what=what))
