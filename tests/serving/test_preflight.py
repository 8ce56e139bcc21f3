"""Checks before the model loads: packages, ports and paths, each a one-line error naming the fix."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from yivl.errors import YivlError
from yivl.models.generation import GenerationSettings
from yivl.serving import launch
from yivl.serving.engine import Engine
from yivl.serving.preflight import check_port, preflight

ROOT = Path(__file__).resolve().parents[2]


def infer_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="infer", overrides=[f"paths.root_dir={ROOT}", *overrides])


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other server listens on (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def busy_message(section: str, port: int) -> re.Pattern:
    return re.compile(
        rf"{section}\.port={port} on 127\.0\.0\.1 is already in use \(another server\?\); stop it or pick a "
        rf"free port, e\.g\. {section}\.port=(\d+)"
    )


@pytest.mark.parametrize("mode", ["web", "api"])
def test_a_busy_port_is_one_line_before_the_model_loads(busy_port: int, mode: str):
    # model.path names no model: had the model been loaded first, that would be the error (and torch is
    # not even imported before the check: infer.py runs it first)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "infer.py"),
            f"mode={mode}",
            f"{mode}.port={busy_port}",
            "model.path=/no/model",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.removeprefix("error: ").removesuffix("\n")
    found = busy_message(mode, busy_port).fullmatch(line)
    assert result.stderr.count("\n") == 1 and found, line
    suggested = int(found.group(1))
    assert suggested > busy_port
    check_port(mode, "127.0.0.1", suggested)  # the port suggested is free


def test_a_host_that_is_not_this_machine_names_the_fix():
    with pytest.raises(YivlError) as caught:
        check_port("web", "203.0.113.9", 8111)  # TEST-NET-3: never an address of this machine
    assert str(caught.value) == (
        "web.host=203.0.113.9 is not an address of this machine; use web.host=127.0.0.1 (this machine "
        "only) or web.host=0.0.0.0 (every interface)"
    )
    with pytest.raises(YivlError, match=r"^api\.host=no such host\.invalid is not a host name or address"):
        check_port("api", "no such host.invalid", 8000)


def test_chat_paths_are_checked_first(tmp_path: Path):
    with pytest.raises(YivlError) as caught:
        preflight(infer_config("mode=chat", f"image={tmp_path / 'cat.jpg'}"))
    assert str(caught.value) == (
        f"image not found: {tmp_path / 'cat.jpg'}; give image=PATH to an image file (or leave it out)"
    )
    with pytest.raises(YivlError) as caught:
        preflight(infer_config("mode=chat", f"chat.history_file={tmp_path / 'no' / 'history'}"))
    assert str(caught.value) == (
        f"chat.history_file={tmp_path / 'no' / 'history'}: the folder {tmp_path / 'no'} does not exist; "
        "create it or set chat.history_file=null (history for this session only)"
    )
    preflight(infer_config("mode=chat", f"chat.history_file={tmp_path / 'history'}"))  # a new file is fine


def test_a_missing_server_package_is_named_before_anything_else(monkeypatch: pytest.MonkeyPatch):
    from yivl.serving import preflight as module

    monkeypatch.setitem(module.SERVER_PACKAGES, "web", ("gradio", "surely_not_an_installed_module"))
    with pytest.raises(YivlError) as caught:
        preflight(infer_config("mode=web"))
    assert str(caught.value) == (
        "mode=web needs surely_not_an_installed_module; install them with pip install 'yivl[serve]'"
    )


def test_a_port_taken_while_the_model_loaded_is_one_line(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, engine: Engine
):
    web = pytest.importorskip("yivl.serving.web")

    def gradio_refuses(*args: object, **kwargs: object) -> None:
        raise OSError(f"Cannot find empty port in range: {busy_port}-{busy_port}.")

    monkeypatch.setattr(web, "launch", gradio_refuses)
    with pytest.raises(YivlError) as caught:
        launch.run_web(infer_config(f"web.port={busy_port}"), engine, GenerationSettings())
    assert busy_message("web", busy_port).fullmatch(str(caught.value))
