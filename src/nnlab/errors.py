"""Errors a user can act on. The CLI prints the message alone and exits 2.

`NnlabError` subclasses `ValueError`: every error raised on purpose is about a value the caller
gave (a config key, a file, a model name), and scikit-learn's convention, which code around
nnlab follows, expects bad parameters to raise `ValueError`. So `except ValueError` catches a
`ConfigError` or `DataError` too; `except NnlabError` catches only nnlab's own.
"""


class NnlabError(ValueError):
    """Base class for every error nnlab raises on purpose."""


class ConfigError(NnlabError):
    """The experiment file or an override is invalid (every problem of the file, one line each)."""


class DataError(NnlabError):
    """An input file is missing, malformed or inconsistent."""


class ModelError(NnlabError):
    """A model name, weights file or checkpoint does not fit."""


class TrainingError(NnlabError):
    """Training cannot go on (for example a NaN loss), or this machine cannot train the config."""
