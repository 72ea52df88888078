"""Model definitions shared by the engines: configs, checkpoint reading, decoders."""

from specbench.models.config import ModelConfig

__all__ = ["ModelConfig"]
