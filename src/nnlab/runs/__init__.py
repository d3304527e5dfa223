"""Run directories: creating and reopening one (`run`), loading its trained model (`trained`), its
plots (`plots`) and its tables (`report`: `nnlab report`, `nnlab compare`)."""

from nnlab.runs.run import BestCheckpoints, Run

__all__ = ["BestCheckpoints", "Run"]
