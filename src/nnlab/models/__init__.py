"""Models: registered builders in the style of timm (`registry`), any timm model as `timm:<name>`,
embedding models with linear, ArcFace or CosFace heads (`heads`), and `build_model` (`build`)."""

from nnlab.models import lenet, mlp, sequence  # noqa: F401  (the built-in builders register on import)
from nnlab.models.build import build_model, count_parameters, load_weights, summary_rows
from nnlab.models.registry import build_plain, describe_models, list_models, register_model

__all__ = ["build_model", "build_plain", "count_parameters", "describe_models", "list_models", "load_weights", "register_model",
           "summary_rows"]
