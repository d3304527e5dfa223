"""Training: `fit` (one dispatch, engine = torch | numpy), the torch loop (`loop`: epochs, AMP, DDP,
checkpoints, resume) and the NumPy engine's runner (`numpy_engine`)."""

from nnlab.training.fit import fit

__all__ = ["fit"]
