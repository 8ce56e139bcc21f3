"""Ask Yi-VL about an image, chat in the terminal, or answer a JSONL batch.

    python infer.py image=cat.jpg question="What is the cat doing?" model_path=/models/Yi-VL-6B
    python infer.py mode=chat image=cat.jpg model_path=/models/Yi-VL-6B
    python infer.py mode=batch batch.input=questions.jsonl model_path=/models/Yi-VL-6B

Configuration: configs/infer.yaml. See docs/inference.md.
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from yivl.cli import reject_legacy_flags, run_reporting_errors

os.environ.setdefault("YIVL_ROOT", str(Path(__file__).resolve().parent))

LEGACY_FLAGS = {
    "--model-path": "model_path",
    "--image-file": "image",
    "--image": "image",
    "--question": "question",
    "--temperature": "generation.temperature",
    "--top_p": "generation.top_p",
    "--max-new-tokens": "generation.max_new_tokens",
}


@hydra.main(version_base="1.3", config_path="configs", config_name="infer")
def main(cfg: DictConfig) -> None:
    from yivl.serving.infer import run

    run_reporting_errors(lambda: run(cfg))


if __name__ == "__main__":
    reject_legacy_flags(sys.argv[1:], LEGACY_FLAGS, "infer.py")
    main()
