"""Training: the LightningModule, stage freezing, QLoRA, strategies, checkpoints, export (train.py)."""
