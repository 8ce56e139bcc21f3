"""yivl: train, fine-tune, evaluate and serve Yi-VL from its published checkpoints."""

__version__ = "0.1.0"
