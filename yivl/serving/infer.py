"""infer.py's modes: one question, a terminal chat, a JSONL batch, the web demo and the API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from yivl.checkpoint.tiny import ensure_tiny_checkpoint
from yivl.config.schemas import validate
from yivl.data.chat import Turn
from yivl.errors import YivlError
from yivl.models.generation import GenerationSettings
from yivl.serving.batch import run_batch
from yivl.serving.chat import run_chat
from yivl.serving.engine import Engine, Request
from yivl.serving.launch import run_api, run_web
from yivl.serving.preflight import preflight


def run(cfg: DictConfig) -> None:
    """Dispatch on ``cfg.mode``, after the old spellings are moved and every typed key is checked."""
    validate(cfg, "infer")
    preflight(cfg)  # servers' packages, ports and paths: a problem costs no model load
    engine = load_engine(cfg)
    settings = generation_settings(cfg.generation)
    runners = {"single": run_single, "chat": run_chat, "batch": run_batch, "web": run_web, "api": run_api}
    runners[cfg.mode](cfg, engine, settings)


def load_engine(cfg: DictConfig) -> Engine:
    """Load ``cfg.model.path`` (a model folder, or a peft adapter over ``cfg.model.base``), building the
    tiny random model first when that is what it names."""
    path = Path(cfg.model.path)
    tiny = Path(cfg.paths.tiny_model).resolve()
    for named in (path, cfg.model.base):
        if named is not None and Path(named).resolve() == tiny:
            ensure_tiny_checkpoint(tiny)
    return Engine.from_path(
        path,
        device=cfg.device,
        dtype=cfg.dtype,
        max_image_pixels=cfg.max_image_pixels,
        base_model=cfg.model.base,
    )


def generation_settings(gen: DictConfig) -> GenerationSettings:
    """Config (checked by yivl.config.schemas.INFER) -> settings; temperature 0 means greedy decoding."""
    return GenerationSettings(
        temperature=float(gen.temperature),
        top_p=None if gen.top_p is None else float(gen.top_p),
        max_new_tokens=int(gen.max_new_tokens),
        seed=gen.seed,
    )


def _printer(stream: bool) -> Callable[[int, str], None] | None:
    if not stream:
        return None
    return lambda _i, delta: print(delta, end="", flush=True)


def run_single(cfg: DictConfig, engine: Engine, settings: GenerationSettings) -> None:
    """Answer ``cfg.question`` about ``cfg.image`` (the original single_inference.py)."""
    if cfg.question is None or not str(cfg.question).strip():
        raise YivlError("the question is empty; give question='...' (or mode=chat for a conversation)")
    request = Request([Turn("human", str(cfg.question))], image=cfg.image)
    answer = engine.generate([request], settings, on_text=_printer(cfg.generation.stream))[0]
    print() if cfg.generation.stream else print(answer)
