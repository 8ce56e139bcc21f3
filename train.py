"""Train Yi-VL: every stage of the paper, full / LoRA / QLoRA, on one CPU or many GPUs.

    python train.py                                          # tiny model, synthetic data, CPU, a few minutes
    python train.py model=yi_vl_6b experiment=stage3 trainer=multi_gpu strategy=deepspeed_zero3 data=json ...
    python train.py model=yi_vl_34b experiment=qlora trainer=gpu data=json data.train.0.path=...
    python train.py -m module.optimizer.lr=1e-5,2e-5          # a sweep, one output folder per job
    python train.py output_dir=runs/demo device=cpu dtype=float32   # evaluate.py's names work here too

Configuration: configs/train.yaml and its groups. See docs/training.md.
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from yivl.cli import run_reporting_errors
from yivl.config.argv import EntryPoint, prepare
from yivl.config.schemas import validate
from yivl.config.vocabulary import TRAIN_SYNONYMS

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("YIVL_ROOT", str(ROOT))
ENTRY = EntryPoint("train.py", ROOT / "configs", "train", synonyms=TRAIN_SYNONYMS)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_reporting_errors(lambda: _run(cfg))


def _run(cfg: DictConfig) -> float | None:
    validate(cfg, "train")  # before torch and Lightning are imported: a bad value costs no start-up
    from yivl.training.run import run

    return run(cfg)


if __name__ == "__main__":
    sys.argv[1:] = run_reporting_errors(lambda: prepare(sys.argv[1:], ENTRY))
    main()
