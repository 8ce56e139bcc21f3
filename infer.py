"""Ask Yi-VL about an image, chat in the terminal, or answer a JSONL batch.

    python infer.py image=cat.jpg question="What is the cat doing?" model.path=/models/Yi-VL-6B
    python infer.py mode=chat image=cat.jpg model.path=/models/Yi-VL-6B
    python infer.py mode=batch batch.input=questions.jsonl model.path=/models/Yi-VL-6B

Configuration: configs/infer.yaml. See docs/inference.md.
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from yivl.cli import run_reporting_errors
from yivl.config.argv import EntryPoint, prepare
from yivl.config.schemas import validate

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("YIVL_ROOT", str(ROOT))

ORIGINAL_FLAGS = {  # the 01-ai scripts' flags: refused with the override to write instead
    "--model-path": "model.path",
    "--image-file": "image",
    "--image": "image",
    "--question": "question",
    "--temperature": "generation.temperature",
    "--top_p": "generation.top_p",
    "--max-new-tokens": "generation.max_new_tokens",
}
ENTRY = EntryPoint("infer.py", ROOT / "configs", "infer", flags=ORIGINAL_FLAGS)


@hydra.main(version_base="1.3", config_path="configs", config_name="infer")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(lambda: _run(cfg))


def _run(cfg: DictConfig) -> None:
    validate(cfg, "infer")  # before torch is imported: a bad value costs no start-up
    from yivl.serving.preflight import preflight

    preflight(cfg)  # likewise a busy port, a missing package or path (run() checks again: it is cheap)
    from yivl.serving.infer import run

    run(cfg)


if __name__ == "__main__":
    sys.argv[1:] = run_reporting_errors(lambda: prepare(sys.argv[1:], ENTRY))
    main()
