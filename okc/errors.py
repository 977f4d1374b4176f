"""User-facing errors.

Everything a user can cause (a bad config key, a missing file, an unknown component name) raises an
``OkcError``: the CLI prints its message without a traceback and exits with status 2. Programmer
invariants use ``assert``.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator


class OkcError(Exception):
    """An error the user can fix; ``str(err)`` is the whole message."""


class ConfigError(OkcError, ValueError):
    """A problem in an experiment, located by its dotted key path (``trainer.max_epochs``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def under(self, prefix: str) -> ConfigError:
        """This error one level out: its path inside ``prefix``."""
        return ConfigError(join(prefix, self.path), self.message)


class ConfigErrors(OkcError, ValueError):
    """Several config problems found in one pass, reported together."""

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def join(*keys: object) -> str:
    """A dotted key path from its parts, skipping empty ones: ``join("data", 0, "")``."""
    return ".".join(str(k) for k in keys if k is not None and k != "")


def under(prefix: str, errors: Iterable[ConfigError]) -> list[ConfigError]:
    """``errors`` found inside the config section at ``prefix``, placed in the whole config.

    Checks report paths relative to what they were given; the caller, who knows where that sits
    in the experiment, places them. No check takes a key path just to write error texts.
    """
    return [e.under(prefix) for e in errors]


@contextlib.contextmanager
def at(prefix: str) -> Iterator[None]:
    """Errors raised inside, placed under ``prefix``: ``ConfigError(s)`` one level out, a
    ``ParamError`` at ``prefix.key``, an unknown registry name at ``prefix`` itself."""
    try:
        yield
    except ConfigErrors as err:
        raise ConfigErrors(under(prefix, err.errors)) from err.__cause__
    except ConfigError as err:
        raise err.under(prefix) from err.__cause__
    except ParamError as err:
        raise ConfigError(join(prefix, err.key), err.message) from err
    except KeyError as err:
        if not isinstance(err, OkcError):  # a registry's UnknownNameError only
            raise
        raise ConfigError(prefix, str(err)) from None


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to ``name``, best first (case-insensitive).

    Only names about as close as the best one are kept, so a clear winner is suggested alone.
    """
    by_lower: dict[str, str] = {}
    for c in candidates:
        by_lower.setdefault(c.lower(), c)
    hits = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)
    if not hits:
        return []
    ratio = [difflib.SequenceMatcher(None, name.lower(), h).ratio() for h in hits]
    return [by_lower[h] for h, r in zip(hits, ratio, strict=True) if r >= ratio[0] - 0.05]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``", did you mean 'x'?"`` or ``""`` when nothing is close."""
    hits = closest(name, candidates)
    if not hits:
        return ""
    if len(hits) == 1:
        return f", did you mean '{hits[0]}'?"
    return ", did you mean " + " or ".join(f"'{h}'" for h in hits) + "?"


class ParamError(ValueError):
    """A bad value for parameter ``key`` of a component, raised while building it.

    ``okc.config.bind.build`` reports it one key deeper than the params
    (``task.params.backbone_params.pretrained: ...``). A ``ValueError`` so components stay
    usable, and fail sensibly, without okc's config system.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")
