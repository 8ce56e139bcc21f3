"""The data side of a run: the base model's tokenizer and image processor at the stage's resolution."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from yivl.data.images import ImageProcessor, image_processor_for
from yivl.data.tokenizer import YiTokenizer
from yivl.models.config import YiVLConfig


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """What the data pipeline needs from the model: tokenizer, processor, features per image."""

    tokenizer: YiTokenizer
    image_processor: ImageProcessor
    num_image_tokens: int


def model_inputs(base: Path, vit_dir: Path, config: YiVLConfig, image_size: int) -> ModelInputs:
    """Tokenizer and processor of the base model, the processor at the run's ``image_size``
    (``RunPlan.image_size``)."""
    processor = image_processor_for(ImageProcessor.from_pretrained(vit_dir), image_size)
    resized = dataclasses.replace(config, vision={**config.vision, "image_size": image_size})
    return ModelInputs(YiTokenizer.from_dir(base), processor, resized.num_image_tokens)


def build_datamodule(data: DictConfig, inputs: ModelInputs) -> L.LightningDataModule:
    """Instantiate the ``data`` config group and bind it to the model's inputs."""
    datamodule = instantiate(data)
    datamodule.bind(inputs.tokenizer, inputs.image_processor, inputs.num_image_tokens)
    return datamodule
