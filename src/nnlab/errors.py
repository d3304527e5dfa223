"""Errors a user can act on. The CLI prints the message alone and exits 2."""


class NnlabError(Exception):
    """Base class for every error nnlab raises on purpose."""


class ConfigError(NnlabError):
    """The experiment file or an override is invalid."""


class DataError(NnlabError):
    """An input file is missing, malformed or inconsistent."""


class ModelError(NnlabError):
    """A model name, weights file or checkpoint does not fit."""


class TrainingError(NnlabError):
    """Training cannot go on (for example a NaN loss)."""
