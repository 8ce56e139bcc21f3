"""Score a Yi-VL checkpoint on local task files: loss, VQA, multiple choice, yes/no (POPE, MME), captions.

    python evaluate.py checkpoint=/models/Yi-VL-6B tasks=[vqa:data/vqav2_val.jsonl,pope:data/pope.jsonl]
    python evaluate.py eval=synthetic checkpoint=logs/train/runs/<run>/export
    python evaluate.py checkpoint=... tasks=[...] output_dir=logs/eval/x resume=true   # continue a killed run

Configuration: configs/eval.yaml. See docs/evaluation.md.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from yivl.cli import run_reporting_errors

os.environ.setdefault("YIVL_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    from yivl.evaluation.run import run

    run_reporting_errors(lambda: run(cfg))


if __name__ == "__main__":
    main()
