"""ship commands."""

from nnlab.cli.app import app, data_app  # noqa: F401
