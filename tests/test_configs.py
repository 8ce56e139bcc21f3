"""Every config group option composes and builds; the stage table matches the paper; bad combinations fail."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import lightning as L
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from yivl.config.argv import group_options, unknown_option
from yivl.errors import YivlError
from yivl.models.presets import preset
from yivl.training.checks import check_config
from yivl.training.run import module_plan
from yivl.training.strategies import build_strategy, deepspeed_config
from yivl.training.trainer import build_callbacks, build_loggers, resolve_hardware

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
GROUPS = (
    "model",
    "experiment",
    "finetune",
    "strategy",
    "data",
    "trainer",
    "logger",
    "callbacks",
    "debug",
    "val_generation",
)
PAPER = {  # Yi paper section 7.2 / model card: global batch, lr, clip, epochs, resolution, trains LLM
    "stage1": (4096, 1e-4, 0.5, 1, 224, "frozen"),
    "stage2": (4096, 1e-4, 0.5, 1, 448, "frozen"),
    "stage3": (256, 2e-5, 1.0, 2, 448, "full"),
}


def compose_train(*overrides: str, hydra_config: bool = False) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train", overrides=["paths.output_dir=/tmp/unused", *overrides], return_hydra_config=hydra_config
        )
    return cfg


def plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def options(group: str) -> list[str]:
    return group_options(CONFIGS, group) or []


def context_for(group: str, option: str) -> list[str]:
    """Other choices that make ``group=option`` a valid combination."""
    if group == "finetune" and option != "full":
        return [f"experiment={option}"]
    if group == "model" and option != "tiny":
        return ["experiment=stage3"]
    if group == "strategy" and option == "fsdp":
        return ["val_generation=none"]  # the demo data's generation task needs unsharded weights
    return []


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_and_passes_checks(group: str) -> None:
    assert options(group), f"no options in configs/{group}"
    for option in options(group):
        cfg = compose_train(f"{group}={option}", *context_for(group, option))
        data = plain(cfg)
        accelerator, precision = resolve_hardware(data["trainer"])
        if data["strategy"]["name"] != "deepspeed":  # deepspeed: test_strategies checks its config
            check_config(data, accelerator, precision)
        base_config = preset(data["model"]["name"])
        assert module_plan(data, Path("/base"), base_config, precision).stage == data["module"]["stage"]


def test_objects_build_for_each_buildable_option() -> None:
    for option in options("data"):
        assert isinstance(instantiate(compose_train(f"data={option}").data), L.LightningDataModule)
    for option in ("auto", "ddp", "fsdp"):
        build_strategy(plain(compose_train(f"strategy={option}"))["strategy"], micro_batch_size=2)
    for option in ("deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload"):
        assert deepspeed_config(plain(compose_train(f"strategy={option}"))["strategy"], 2)[
            "zero_optimization"
        ]
    for option in options("callbacks"):
        build_callbacks(plain(compose_train(f"callbacks={option}"))["callbacks"])
    assert build_loggers(plain(compose_train("logger=none"))["logger"]) == []
    assert len(build_loggers(plain(compose_train("logger=csv"))["logger"])) == 1


@pytest.mark.parametrize("option", ["wandb", "tensorboard"])
def test_optional_loggers_build_or_name_the_package(option: str) -> None:
    spec = plain(compose_train(f"logger={option}"))["logger"]
    if importlib.util.find_spec(option) is not None:
        assert len(build_loggers(spec)) == 1
    else:
        with pytest.raises(YivlError, match=f"logger={option} needs the {option} package"):
            build_loggers(spec)


def test_cpu_trainers_instantiate() -> None:
    for option in ("default", "cpu", "ddp_sim"):
        data = plain(compose_train(f"trainer={option}", "trainer.accelerator=cpu"))
        kwargs = {k: v for k, v in data["trainer"].items() if k != "_target_"}
        assert L.Trainer(**{**kwargs, "precision": "32-true"}, logger=False).num_devices >= 1
    for option in ("gpu", "multi_gpu", "multi_node"):
        trainer = plain(compose_train(f"trainer={option}"))["trainer"]
        assert (trainer["accelerator"], trainer["precision"]) == ("gpu", "bf16-mixed")


def test_debug_and_search_configs_compose() -> None:
    assert compose_train("debug=fdr").trainer.fast_dev_run is True
    assert compose_train("debug=overfit").trainer.overfit_batches == 2
    cfg = compose_train("hparams_search=optuna", hydra_config=True)
    assert cfg.hydra.sweeper.n_trials == 2
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert "module.optimizer.lr" in cfg.hydra.sweeper.params


@pytest.mark.parametrize("stage", sorted(PAPER))
def test_stage_defaults_are_the_papers(stage: str) -> None:
    batch, lr, clip, epochs, size, llm = PAPER[stage]
    cfg = plain(compose_train(f"experiment={stage}"))
    assert cfg["global_batch_size"] == batch
    assert cfg["module"]["optimizer"]["lr"] == lr
    assert cfg["module"]["optimizer"]["vision_tower_lr"] == cfg["module"]["optimizer"]["projector_lr"] == lr
    assert (cfg["trainer"]["gradient_clip_val"], cfg["trainer"]["max_epochs"]) == (clip, epochs)
    assert (cfg["module"]["image_size"], cfg["module"]["train"]["llm"]) == (size, llm)
    assert cfg["module"]["train"]["vision_tower"] and cfg["module"]["train"]["projector"]


def test_experiments_never_pick_the_model_and_set_every_stage_key() -> None:
    default_module = plain(compose_train())["module"]
    for path in sorted((CONFIGS / "experiment").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        assert "model" not in raw and not any("/model" in str(d) for d in raw.get("defaults", [])), path.name
        for key in ("stage", "image_size", "train", "optimizer", "scheduler"):
            assert key in raw["module"], f"{path.name} leaves module.{key} at the demo's value"
        assert set(raw["module"]["optimizer"]) >= set(default_module["optimizer"]) - {"betas", "eps"}
        cfg = plain(compose_train("model=yi_vl_34b", f"experiment={path.stem}"))
        assert cfg["model"]["name"] == "yi_vl_34b"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["experiment=stage3", "finetune=qlora"], "experiment=stage3 trains the LLM in full"),
        (["experiment=stage1", "finetune=lora"], "keeps the LLM frozen"),
        (["experiment=lora", "finetune=full"], "trains LoRA adapters; use finetune=lora"),
        (["model=yi_vl_6b"], "needs a training stage"),
        (
            ["experiment=qlora", "strategy=fsdp"],
            "finetune=qlora with strategy=fsdp: FSDP2 cannot shard 4-bit",
        ),
        (["experiment=qlora", "strategy=deepspeed_zero3_offload"], "deepspeed"),
        (["global_batch_size=0"], "must be at least 1"),
        (["strategy=fsdp"], "val_generation needs the whole model on every rank, but strategy=fsdp"),
        (["experiment=qlora", "finetune.quant.type=int3"], "type must be one of nf4, fp4"),
        (
            ["data.pack_length=0"],
            r"^data.pack_length=0 must be an integer >= 1 \(or null for data.max_length\)$",
        ),
        (["data.packing=maybe"], "^data.packing=maybe: expected true or false$"),
    ],
)
def test_impossible_combinations_are_refused_in_one_line(overrides: list[str], message: str) -> None:
    data = plain(compose_train(*overrides))
    with pytest.raises(YivlError, match=message) as err:
        check_config(data, "gpu", "bf16-mixed")
    assert "\n" not in str(err.value)


def test_fsdp_passes_the_checks_on_the_cpu() -> None:
    check_config(plain(compose_train("strategy=fsdp", "val_generation=none")), "cpu", "32-true")


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_is_refused_on_the_cpu_in_one_line(precision: str) -> None:
    data = plain(compose_train())
    with pytest.raises(YivlError, match=f"trainer.precision={precision} needs a GPU") as err:
        check_config(data, "cpu", precision)
    assert "\n" not in str(err.value)
    check_config(data, "cpu", "32-true")
    check_config(data, "gpu", precision)


def test_qlora_under_zero3_is_allowed_when_storage_matches_compute() -> None:
    from yivl.training.checks import check_qlora

    data = plain(compose_train("experiment=qlora", "strategy=deepspeed_zero3"))
    matching = {**data["finetune"], "quant": {**data["finetune"]["quant"], "storage_dtype": "bfloat16"}}
    check_qlora(matching, data["strategy"], "bf16-mixed")
    with pytest.raises(YivlError, match=r"set finetune\.quant\.storage_dtype=bfloat16"):
        check_qlora(data["finetune"], data["strategy"], "bf16-mixed")


def test_unknown_group_option_lists_the_valid_ones() -> None:
    message = unknown_option(["experiment=stage9"], CONFIGS)
    assert message == "unknown experiment=stage9; valid options: lora, qlora, stage1, stage2, stage3"
    assert unknown_option(["-m", "model=tiny,yi_vl_7b"], CONFIGS).startswith("unknown model=yi_vl_7b")
    assert (
        unknown_option(["module.optimizer.lr=1e-5,2e-5", "experiment=stage1", "logger=none"], CONFIGS) is None
    )


def test_local_group_is_ignored_by_git() -> None:
    assert "configs/local/*" in (ROOT / ".gitignore").read_text().splitlines()
    assert (CONFIGS / "local" / ".gitkeep").exists()
