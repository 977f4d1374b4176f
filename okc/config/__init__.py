"""Experiments: the schema, loading (YAML/TOML, interpolation, overrides) and validation."""
