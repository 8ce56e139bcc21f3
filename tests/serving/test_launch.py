"""``infer.py mode=web|api``: configs/infer.yaml's web/api keys reach the servers; safe defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from yivl.errors import YivlError
from yivl.models.generation import GenerationSettings
from yivl.serving import launch
from yivl.serving.engine import Engine

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def infer_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="infer", overrides=list(overrides))


def test_defaults_bind_loopback_without_share_or_remote_images(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("YIVL_API_KEY", raising=False)
    cfg = infer_config()
    assert cfg.web.host == "127.0.0.1" and cfg.api.host == "127.0.0.1"
    assert cfg.web.share is False and cfg.api.allow_remote_images is False and cfg.api.api_key is None
    assert (cfg.web.temperature, cfg.web.top_p, cfg.web.max_new_tokens) == (0.2, 0.7, 512)


def test_api_settings_come_from_the_config(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("YIVL_API_KEY", "from-env")
    cfg = infer_config("api.model_name=my-vl", "api.max_image_bytes=123", "api.allow_remote_images=true")
    settings = launch.api_settings(cfg, GenerationSettings(temperature=0.5))
    assert settings.model_name == "my-vl" and settings.api_key == "from-env"
    assert settings.images.max_image_bytes == 123 and settings.images.allow_remote
    assert settings.images.max_pixels == cfg.max_image_pixels and settings.defaults.temperature == 0.5


def test_system_messages_default_to_use_and_a_bad_value_is_a_one_line_error():
    assert launch.api_settings(infer_config(), GenerationSettings()).system_messages == "use"
    for value in ("ignore", "reject"):
        cfg = infer_config(f"api.system_messages={value}")
        assert launch.api_settings(cfg, GenerationSettings()).system_messages == value
    with pytest.raises(YivlError, match=r"^api\.system_messages=keep; use one of use, ignore, reject$"):
        launch.api_settings(infer_config("api.system_messages=keep"), GenerationSettings())


def test_run_api_serves_the_configured_address(monkeypatch: pytest.MonkeyPatch, engine: Engine):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    launch.run_api(infer_config("api.port=8123"), engine, GenerationSettings())
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    assert any(getattr(r, "path", "") == "/v1/chat/completions" for r in seen["app"].routes)


def test_run_web_launches_the_demo(monkeypatch: pytest.MonkeyPatch, engine: Engine):
    web = pytest.importorskip("yivl.serving.web")
    seen = {}
    monkeypatch.setattr(web, "launch", lambda demo, host, port, share, max_bytes, **kw: seen.update(locals()))
    launch.run_web(infer_config("web.port=8124", "web.share=true"), engine, GenerationSettings())
    assert (seen["host"], seen["port"], seen["share"]) == ("127.0.0.1", 8124, True)
    assert seen["max_bytes"] == 20_000_000


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("a.b", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool):
    assert launch.is_loopback(host) is loopback


def test_a_missing_server_package_names_the_install_command():
    with pytest.raises(YivlError, match=r"pip install 'yivl\[serve\]'"):
        launch.require("web", "surely_not_an_installed_module")


def test_a_bad_port_is_a_one_line_error(engine: Engine):
    with pytest.raises(YivlError, match=r"api\.port"):
        launch.run_api(infer_config("api.port=70000"), engine, GenerationSettings())


def test_the_security_keys_reach_the_api_settings(tmp_path: Path):
    cfg = infer_config(
        f"api.allowed_local_media_path=[{tmp_path}]",
        "api.allowed_hosts=[vl.internal]",
        "api.cors_origins=[https://app.example]",
        "api.remote_allowed_networks=[10.0.0.0/8]",
        "api.unsupported_fields=warn",
        "api.max_queue=3",
        "api.host=0.0.0.0",
        "api.image_cache_size=0",
        "api.image_cache_bytes=1000",
    )
    settings = launch.api_settings(cfg, GenerationSettings())
    assert settings.images.allowed_local_media_path == (str(tmp_path.resolve()),)
    assert settings.images.remote_allowed_networks == ("10.0.0.0/8",)
    assert (settings.allowed_hosts, settings.cors_origins) == (("vl.internal",), ("https://app.example",))
    assert (settings.unsupported_fields, settings.max_parsing, settings.host) == ("warn", 3, "0.0.0.0")
    assert (settings.image_cache_size, settings.image_cache_bytes) == (0, 1000)


def test_local_files_cors_and_extra_hosts_are_off_by_default():
    settings = launch.api_settings(infer_config(), GenerationSettings())
    assert settings.images.allowed_local_media_path == () and settings.images.remote_allowed_networks == ()
    assert (settings.allowed_hosts, settings.cors_origins, settings.unsupported_fields) == ((), (), "error")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "api.allowed_local_media_path=[/no/such/dir]",
            r"^api\.allowed_local_media_path: /no/such/dir is not a directory; name existing image folders$",
        ),
        (
            "api.remote_allowed_networks=[10.0.0.300/8]",
            r"^api\.remote_allowed_networks: .*; give CIDR blocks such as \[10\.0\.0\.0/8\]$",
        ),
        ("api.unsupported_fields=ignore", r"^api\.unsupported_fields=ignore; use one of error, warn$"),
        ("api.cors_origins=https://a.example", r"^api\.cors_origins=https://a\.example: expected a list"),
    ],
)
def test_bad_security_keys_are_one_line_errors(override: str, message: str):
    with pytest.raises(YivlError, match=message):
        launch.api_settings(infer_config(override), GenerationSettings())
