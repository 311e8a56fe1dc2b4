"""Benchmarks of nlp-transfer, run from a checkout (not part of the installed package): ``python -m benchmarks --help``."""
