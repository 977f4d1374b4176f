"""Optional packages a logger needs, and the error that names the extra to install."""

from __future__ import annotations

import importlib.util

from okc.errors import ConfigError

# package to import → the okc extra that installs it
EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "matplotlib": "plot"}


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def missing_package_error(package: str, *, what: str, path: str) -> ConfigError:
    """``what`` (a logger name, a feature) cannot run without ``package``."""
    extra = EXTRAS.get(package)
    how = f"pip install 'okc[{extra}]'" if extra else f"pip install {package}"
    return ConfigError(path, f"{what} needs the {package} package, which is not installed: {how}")


def require(package: str, *, what: str, path: str) -> None:
    if not installed(package):
        raise missing_package_error(package, what=what, path=path)
