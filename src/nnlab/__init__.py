"""nnlab: train, compare and ship image recognizers from one config file."""

from nnlab.errors import ConfigError, DataError, ModelError, NnlabError, TrainingError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "ModelError", "NnlabError", "TrainingError", "__version__"]
