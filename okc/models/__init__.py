"""Models built from config: backbone → neck → pooling → head (see ``okc.models.model``)."""

from okc.models.model import MODEL_KEYS, Model, build_model, check_model_params

__all__ = ["MODEL_KEYS", "Model", "build_model", "check_model_params"]
