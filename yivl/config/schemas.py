"""The schemas of train.py, evaluate.py and infer.py: the keys users edit most, typed (see schema.py).

Messages that users (and tests) already knew from the hand checks these replace are kept word for word
through ``message=``.
"""

from __future__ import annotations

from typing import Any

from yivl.config.schema import (
    BOOL,
    COUNT,
    OPTIONAL_TEXT,
    STRINGS,
    TEXT,
    Choice,
    Field,
    Fraction,
    Int,
    Number,
    check,
)
from yivl.config.vocabulary import DTYPES, apply_old_keys

DEVICE = Choice("auto", "cpu", "cuda", "cuda:N", "mps", pattern=r"cuda:\d+")
NO_LIMIT = "(or -1 for no limit)"
LLM_MODES = ("full", "lora", "frozen")
METHODS = ("full", "lora", "qlora")
QUANT_TYPES = ("nf4", "fp4")
STORAGE_DTYPES = ("uint8", "bfloat16", "float16", "float32")
PRECISIONS = (
    "auto",
    "32-true",
    "32",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "64",
    "bf16",
)
MODES = ("single", "chat", "batch", "web", "api")
PORT = Int(1, high=65535, message="{key}={value} is not a TCP port; use 1-65535")
POSITIVE = Number(above=0)

_DATA = {
    "data.batch_size": COUNT,
    "data.val_batch_size": Int(1, null=True),
    "data.num_workers": Int(0),
    "data.max_length": COUNT,
    "data.seed": Int(),
    "data.max_record_bytes": COUNT,
    "data.max_pixels": COUNT,
    "data.max_image_bytes": COUNT,
    "data.max_reject_fraction": Fraction(),
    "data.log_every": COUNT,
    "data.group_by_length": BOOL,
    "data.packing": BOOL,
    "data.pack_length": Int(1, null=True, hint="(or null for data.max_length)"),
    "data.pack_buffer": COUNT,
    "data.drop_last": BOOL,
    "data.pin_memory": BOOL,
    "data.persistent_workers": BOOL,
    "data.resampled": BOOL,
    "data.shuffle_buffer": Int(0),
    "data.samples_per_epoch": Int(1, null=True),
    "data.val_samples": Int(1, null=True),
}

_TRAINER = {
    "trainer.accelerator": Choice("auto", "cpu", "gpu", "cuda", "mps", "tpu", "xla", "hpu"),
    "trainer.num_nodes": COUNT,
    "trainer.precision": Choice(*PRECISIONS),
    "trainer.min_epochs": Int(0, null=True),
    "trainer.max_epochs": Int(-1, null=True, hint=NO_LIMIT),
    "trainer.max_steps": Int(-1, hint=NO_LIMIT),
    "trainer.gradient_clip_val": Number(0, null=True),
    "trainer.log_every_n_steps": COUNT,
    "trainer.limit_train_batches": Number(0),
    "trainer.limit_val_batches": Number(0),
    "trainer.val_check_interval": POSITIVE,
    "trainer.check_val_every_n_epoch": Int(1, null=True),
    "trainer.num_sanity_val_steps": Int(-1, hint="(or -1 for all)"),
    "trainer.enable_model_summary": BOOL,
    "trainer.overfit_batches": Number(0),
}

_MODULE = {
    "module.stage": TEXT,
    "module.image_size": Int(1, null=True, hint="(or null for the base model's)"),
    "module.train.vision_tower": BOOL,
    "module.train.projector": BOOL,
    "module.train.llm": Choice(
        *LLM_MODES, message="module.train.llm={value!r} is unknown; use one of " + ", ".join(LLM_MODES)
    ),
    "module.optimizer.lr": Number(0),
    "module.optimizer.vision_tower_lr": Number(0),
    "module.optimizer.projector_lr": Number(0),
    "module.optimizer.weight_decay": Number(0),
    "module.optimizer.eps": POSITIVE,
    "module.scheduler.warmup_ratio": Fraction(),
    "module.scheduler.min_lr_ratio": Fraction(),
}

_FINETUNE = {
    "finetune.method": Choice(
        *METHODS, message="finetune.method={value!r} is unknown; use one of " + ", ".join(METHODS)
    ),
    "finetune.lora.r": COUNT,
    "finetune.lora.alpha": POSITIVE,
    "finetune.lora.dropout": Fraction(),
    "finetune.quant.double_quant": BOOL,
    "finetune.quant.type": Choice(
        *QUANT_TYPES,
        message=f"finetune.quant: type must be one of {', '.join(QUANT_TYPES)} and storage_dtype one of "
        f"{', '.join(STORAGE_DTYPES)} (got type={{value}})",
    ),
    "finetune.quant.storage_dtype": Choice(
        *STORAGE_DTYPES,
        message=f"finetune.quant: type must be one of {', '.join(QUANT_TYPES)} and storage_dtype one of "
        f"{', '.join(STORAGE_DTYPES)} (got storage_dtype={{value}})",
    ),
}

TRAIN: dict[str, Field] = {
    "seed": Int(),
    "model.attn_implementation": TEXT,  # the values are checked by yivl.models.attention
    "model.loss_chunk_size": Int(0, hint="(0: the whole micro-batch at once)"),
    "global_batch_size": Int(1, message="global_batch_size={value} must be at least 1"),
    "ckpt_path": OPTIONAL_TEXT,
    **_TRAINER,
    **_DATA,
    **_MODULE,
    **_FINETUNE,
    "export.enabled": BOOL,
    "export.merge": BOOL,
    "export.dtype": Choice("auto", "bfloat16", "float32", "float16"),
}

_LIMITS = {
    "max_image_pixels": COUNT,
    "max_image_bytes": Int(1, message="max_image_bytes={value!r} must be a positive integer"),
    "max_record_bytes": Int(1, message="max_record_bytes={value!r} must be a positive integer"),
}

EVALUATE: dict[str, Field] = {
    "model.path": Field("str", non_empty=True),
    "model.base": OPTIONAL_TEXT,
    "output_dir": Field("str", non_empty=True, message="output_dir is empty; give output_dir=DIR"),
    "resume": BOOL,
    "limit": Int(1, null=True, message="limit={value!r} must be a positive integer or null"),
    "batch_size": Int(1, message="batch_size={value!r} must be an integer >= 1"),
    "num_workers": Int(0, message="num_workers={value!r} must be an integer >= 0"),
    "device": DEVICE,
    "devices": Int(1, message="devices={value!r} must be an integer >= 1"),
    "rank_timeout_s": Number(above=0, message="rank_timeout_s={value!r} must be a number of seconds > 0"),
    "dtype": Choice(*DTYPES),
    "seed": Int(),
    "threads": Int(1, null=True, also=("auto",)),
    **_LIMITS,
    "allow_images_outside_folder": BOOL,
    "batch_check": Int(0, message="batch_check={value!r} must be an integer >= 0"),
    "bootstrap_iters": Int(2, message="bootstrap_iters={value!r} must be an integer >= 2"),
    "fingerprint": Choice("sample", "full", message="fingerprint={value!r}; choose sample or full"),
    "chart": BOOL,
    "progress": BOOL,
}

_GENERATION = {
    "generation.temperature": Number(0, message="generation.temperature={value} must be >= 0 (0 is greedy)"),
    "generation.top_p": Number(
        above=0, high=1, null=True, message="generation.top_p={value} must be in (0, 1] or null"
    ),
    "generation.max_new_tokens": Int(1, message="generation.max_new_tokens={value} must be >= 1"),
    "generation.seed": Int(null=True),
    "generation.stream": BOOL,
}

_BATCH = {
    "batch.input": OPTIONAL_TEXT,
    "batch.output": OPTIONAL_TEXT,
    "batch.image_folder": OPTIONAL_TEXT,
    "batch.allow_images_outside_folder": BOOL,
    **{
        f"batch.{key}": Int(1, message="{key}={value!r} must be an integer >= 1")
        for key in ("max_record_bytes", "max_image_bytes", "batch_size")
    },
}

_CHAT = {"chat.request_timeout_s": POSITIVE, "chat.history_file": OPTIONAL_TEXT}

_SERVERS = {
    "web.host": TEXT,
    "web.port": PORT,
    "web.share": BOOL,
    "web.inbrowser": BOOL,
    "web.temperature": Number(0),
    "web.top_p": Number(above=0, high=1),
    "web.max_new_tokens": COUNT,
    "web.max_new_tokens_limit": COUNT,
    "web.max_upload_bytes": COUNT,
    "web.queue_size": COUNT,
    "web.max_batch_size": COUNT,
    "web.max_prefill_rows": COUNT,
    "web.prefix_cache_images": Int(0),
    "web.prefix_cache_bytes": Int(0),
    "web.request_timeout_s": POSITIVE,
    "web.render_markdown": BOOL,
    "web.stream_interval_s": Number(0),
    "api.host": TEXT,
    "api.port": PORT,
    "api.model_name": Field("str", non_empty=True),
    "api.api_key": OPTIONAL_TEXT,
    "api.allowed_hosts": STRINGS,
    "api.cors_origins": STRINGS,
    "api.allowed_local_media_path": STRINGS,
    "api.allow_remote_images": BOOL,
    "api.remote_timeout_s": POSITIVE,
    "api.remote_max_redirects": Int(0),
    "api.remote_allowed_networks": STRINGS,
    "api.max_request_bytes": COUNT,
    "api.max_decodes": COUNT,
    "api.image_cache_size": Int(0),
    "api.image_cache_bytes": Int(0),
    "api.max_image_bytes": COUNT,
    "api.max_n": COUNT,
    "api.max_queue": COUNT,
    "api.max_batch_size": COUNT,
    "api.batch_wait_s": Number(0),
    "api.max_prefill_rows": COUNT,
    "api.prefix_cache_images": Int(0),
    "api.prefix_cache_bytes": Int(0),
    "api.request_timeout_s": POSITIVE,
    "api.stream_interval_s": Number(0),
    "api.system_messages": Choice(
        "use", "ignore", "reject", message="api.system_messages={value}; use one of use, ignore, reject"
    ),
    "api.unsupported_fields": Choice(
        "error", "warn", message="api.unsupported_fields={value}; use one of error, warn"
    ),
    "api.log_level": Choice("critical", "error", "warning", "info", "debug", "trace"),
}

INFER: dict[str, Field] = {
    "mode": Choice(*MODES, message="unknown mode={value}; use one of " + ", ".join(MODES)),
    "model.path": Field("str", non_empty=True),
    "model.base": OPTIONAL_TEXT,
    "image": OPTIONAL_TEXT,
    "question": OPTIONAL_TEXT,
    "device": DEVICE,
    "dtype": Choice(*DTYPES),
    "max_image_pixels": COUNT,
    **_GENERATION,
    **_BATCH,
    **_CHAT,
    **_SERVERS,
}

SCHEMAS = {"train": TRAIN, "eval": EVALUATE, "infer": INFER}


def validate(cfg: Any, config_name: str) -> None:
    """Old spellings moved to their new keys (one notice each), then the schema of ``config_name``
    (train, eval or infer) checked; YivlError with one line on the first bad value."""
    apply_old_keys(cfg, config_name)
    check(cfg, SCHEMAS[config_name])
