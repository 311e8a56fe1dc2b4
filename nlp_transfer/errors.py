"""Errors a user can fix. Entry points print them as one line and exit non-zero."""


class NLPTransferError(Exception):
    """Base class: the message says what is wrong and what to change."""


class ConfigError(NLPTransferError):
    """A recipe or command-line override is invalid."""


class DataError(NLPTransferError):
    """The data cannot be used as configured (columns, labels, splits, texts)."""


class ModelError(NLPTransferError):
    """A checkpoint cannot be found or loaded."""


class TrainingError(NLPTransferError):
    """Training cannot go on (e.g. the loss became NaN or infinite); nothing was written."""
