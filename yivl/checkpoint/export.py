"""Export a training result to the published Yi-VL layout, or to a LoRA adapter beside a base model.

    python -m yivl.checkpoint.export SOURCE OUT [--no-merge] [--model-base DIR] [--dtype auto|bfloat16]
                                     [--overwrite]

SOURCE is a training checkpoint (``checkpoints/*.ckpt``, or a DeepSpeed checkpoint folder), an adapter
export (``export.merge=false``), or a plain peft LoRA adapter (``save_pretrained`` of a peft model over
Yi-VL's LLM or the whole LLaVA-style model; see ``yivl.checkpoint.peft_adapter``), which is merged into
its base model (``--model-base``, else its local ``base_model_name_or_path``). ``--overwrite`` replaces an
earlier export in OUT (written beside it first, swapped in when complete); anything else in OUT is refused.

A checkpoint holds only the trainable tensors, so the export starts from the base model (recorded in
the checkpoint; ``--model-base`` overrides it), sets the stage's resolution, injects the LoRA layers if
the run had them, loads the trained tensors (all of it ``yivl.checkpoint.trained.model_from_plan``), and
merges the adapters into the weights (LoRA and QLoRA alike: the merge is into the full-precision base).

An adapter export (``--no-merge``) is a folder with ``adapter_config.json`` + ``adapter_model.safetensors``
(a standard peft adapter for the Yi LLM), ``trainables.safetensors`` (the other trained tensors, e.g. the
projector) and ``yivl_adapter.json`` (base model path, resolution, LoRA settings).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from yivl.config.vocabulary import add_flag
from yivl.errors import YivlError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m yivl.checkpoint.export", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "source",
        type=Path,
        help="a .ckpt file, a DeepSpeed checkpoint folder, an adapter export or a peft adapter folder",
    )
    parser.add_argument("out", type=Path, help="output folder (must be empty or absent, unless --overwrite)")
    parser.add_argument(
        "--no-merge", action="store_true", help="write an adapter export instead of merged weights"
    )
    add_flag(
        parser,
        "--model-base",
        type=Path,
        default=None,
        metavar="DIR",
        help="base model folder (default: the run's, or the peft adapter's base_model_name_or_path)",
    )
    parser.add_argument(
        "--dtype", default="auto", help="weights dtype: auto (the base model's), bfloat16, float32"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT")
    args = parser.parse_args(argv)
    # torch and the model code load only now: --help and argument errors answer at once
    from yivl.checkpoint.exporter import export_replacing, export_source

    write = export_replacing if args.overwrite else export_source
    try:
        path = write(args.source, args.out.expanduser(), not args.no_merge, args.model_base, args.dtype)
    except YivlError as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"exported to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
