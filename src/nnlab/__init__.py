"""nnlab: train, compare and ship image recognizers from one config file.

The Python API (`nnlab.fit`, `distill`, `load_run`, `resume`, `study`, `lr_find`, `register_model`,
`Callback`; see docs/python-api.md) is imported on first
use: torch takes seconds to load, and `nnlab data ...` runs without it."""

from nnlab.errors import ConfigError, DataError, ModelError, NnlabError, TrainingError
from nnlab.version import __version__

API = ("Callback", "Predictions", "StopTraining", "StudyResult", "TrainedRun", "distill", "fit", "load_run",
       "lr_find", "make_config", "register_model", "resume", "study")

__all__ = ["ConfigError", "DataError", "ModelError", "NnlabError", "TrainingError", "__version__", *API]


def __getattr__(name: str):
    """`nnlab.fit` and the rest of the API, loaded lazily (PEP 562)."""
    if name in API:
        import nnlab.api  # heavy (torch): loaded on first use of the API

        return getattr(nnlab.api, name)
    if name == "faces":
        import nnlab.faces  # heavy (torch): `nnlab.faces.detect` and the rest, on first use

        return nnlab.faces
    raise AttributeError(f"module 'nnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names and the lazy API's, so that tab completion offers `nnlab.fit` before first use."""
    return sorted(set(globals()) | set(API) | {"faces"})
