"""Helpers every layer may use: quiet library loaders, progress that suits the terminal, paths, machine facts.

The lowest layer of the package (beside :mod:`nlp_transfer.errors`): nothing here imports
another ``nlp_transfer`` module, and nothing imports torch at module level.
"""
