"""Training: configs, patch-pair datasets, the trainer with exact resume and DDP."""

from mrsr.training.config import DEFAULTS, load_config, model_config, resolve_config
from mrsr.training.trainer import train

__all__ = ["DEFAULTS", "load_config", "model_config", "resolve_config", "train"]
