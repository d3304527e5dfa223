"""nnlab: train, compare and ship image recognizers from one config file."""

from nnlab.errors import ConfigError, DataError, ModelError, NnlabError, TrainingError
from nnlab.version import __version__

__all__ = ["ConfigError", "DataError", "ModelError", "NnlabError", "TrainingError", "__version__"]
