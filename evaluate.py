"""Score a Yi-VL checkpoint on local task files: loss, VQA, multiple choice, yes/no (POPE, MME), captions.

    python evaluate.py model.path=/models/Yi-VL-6B tasks=[vqa:data/vqav2_val.jsonl,pope:data/pope.jsonl]
    python evaluate.py eval=synthetic model.path=logs/train/runs/<run>/export
    python evaluate.py model.path=... tasks=[...] output_dir=logs/eval/x resume=true   # continue a killed run
    torchrun --standalone --nproc-per-node 2 evaluate.py model.path=... tasks=[...] output_dir=DIR  # 2 ranks

Configuration: configs/eval.yaml. See docs/evaluation.md.
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
ENTRY = EntryPoint("evaluate.py", ROOT / "configs", "eval")


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(lambda: _run(cfg))


def _run(cfg: DictConfig) -> None:
    validate(cfg, "eval")  # before torch is imported: a bad value costs no start-up
    from yivl.evaluation.run import run

    run(cfg)


if __name__ == "__main__":
    sys.argv[1:] = run_reporting_errors(lambda: prepare(sys.argv[1:], ENTRY))
    main()
