"""The export that ends every training run: the published layout (LoRA merged) or an adapter folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from yivl.checkpoint.exporter import export_source, save_adapter, save_merged
from yivl.checkpoint.load import LoadedModel
from yivl.checkpoint.plan import RunPlan
from yivl.checkpoint.trained import model_from_plan
from yivl.data.images import ImageProcessor
from yivl.data.tokenizer import YiTokenizer
from yivl.errors import YivlError
from yivl.models.yivl import YiVL


def check_export_dir(export: Mapping) -> None:
    """Refuse to start a run whose export would overwrite an earlier run's export."""
    out = Path(export["dir"])
    if export["enabled"] and out.is_dir() and any(out.iterdir()):
        raise YivlError(
            f"{out} already holds an earlier run's export; pick a new run directory (hydra.run.dir=...) "
            "or export.dir=..."
        )


def export_trained(
    model: YiVL, plan: RunPlan, tokenizer: YiTokenizer, image_processor: ImageProcessor, export: Mapping
) -> Path:
    """Export the model in memory at the end of training (rank 0, unsharded strategies).

    Full fine-tunes are saved as they are; LoRA adapters are merged in place. QLoRA's base weights are
    4-bit in memory, so its adapters are merged into the full-precision base model read again.
    """
    out, merge, dtype = Path(export["dir"]), bool(export["merge"]), str(export["dtype"])
    model = model.cpu()
    if plan.has_adapters and not merge:
        return save_adapter(model, plan, out)
    if plan.finetune.method == "qlora":
        trained = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        return save_merged(model_from_plan(plan, trained), out, dtype)
    loaded = LoadedModel(model, tokenizer, image_processor, model.config, Path(plan.model.path))
    return save_merged(loaded, out, dtype)


def export_checkpoint(checkpoint: Path, export: Mapping) -> Path:
    """Export from a saved checkpoint (sharded strategies, whose parameters no single rank holds)."""
    return export_source(checkpoint, Path(export["dir"]), bool(export["merge"]), None, str(export["dtype"]))
