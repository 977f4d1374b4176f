"""The engine: the loop, the compiled step, precision, distribution, checkpoints."""
