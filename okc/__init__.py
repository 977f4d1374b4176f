"""okc: a compile-first, config-driven computer-vision training framework."""

__version__ = "0.1.0"
