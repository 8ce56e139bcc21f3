"""A training run with a skipped sample shows the count in its metrics (configs/callbacks/default.yaml)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.data.corpus import write_good_corpus
from yivl.training.run import train


def test_skipped_and_repaired_counts_reach_the_csv_metrics(train_cfg, tmp_path: Path) -> None:
    path = write_good_corpus(tmp_path, 19)
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])  # starts with the assistant: repaired (that turn dropped)
    first["conversations"].insert(0, {"from": "gpt", "value": "hello"})
    path.write_text("\n".join(["{broken", json.dumps(first), *lines[1:]]) + "\n")
    cfg = train_cfg(
        f"data.train.0.path={path}",
        f"data.train.0.image_folder={tmp_path}",
        "data.max_reject_fraction=0.1",
        "data.num_workers=0",
        "trainer.max_epochs=1",  # every record read once
        "trainer.log_every_n_steps=2",
        "val_generation=none",
        out=tmp_path / "run",
        data="json",
    )
    train(cfg)
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("data/skipped/json_malformed")]
    assert rows, "no data/skipped/json_malformed column with a value"
    assert float(rows[-1]["data/skipped/json_malformed"]) == 1.0
    # the rejected first record is replaced by the next one, the repaired record: it is read twice
    assert float(rows[-1]["data/repaired/assistant_first_dropped"]) == 2.0
