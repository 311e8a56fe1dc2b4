"""Experiments that train several runs and compare them (``compare``: recipes side by side with a baseline)."""
