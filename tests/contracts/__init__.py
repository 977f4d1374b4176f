"""Contract cases: how to build and run every component okc registers (see README.md)."""
