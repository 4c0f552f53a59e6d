"""The model registry: every architecture enters through `register`, every model leaves through `build_model`."""

from cnnjobs.models.registry import ModelInfo, build_model, list_models, model_info, register

__all__ = ["ModelInfo", "build_model", "list_models", "model_info", "register"]
