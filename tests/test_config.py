"""Settings: read from ``IWEBLENS_*`` once, refused by variable name, handed on by ``to_env``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from iweblens.config import Settings, SettingsError


def test_to_env_then_from_env_gives_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = Settings(
        model_dir=Path("/opt/models"), engine="onnxruntime", confidence=0.25, port=5001,
        served_by="replica-3", read_timeout=7,
    )  # fmt: skip
    environment = Settings.to_env(**dataclasses.asdict(wanted))
    assert environment["IWEBLENS_PORT"] == "5001"
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    assert Settings.from_env() == wanted


def test_to_env_leaves_out_what_is_not_given() -> None:
    assert Settings.to_env(port=5002, engine=None) == {"IWEBLENS_PORT": "5002"}
    with pytest.raises(TypeError, match="prot"):
        Settings.to_env(prot=5002)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("IWEBLENS_PORT", "http", "IWEBLENS_PORT='http' is not a whole number"),
        ("IWEBLENS_CONFIDENCE", "high", "IWEBLENS_CONFIDENCE='high' is not a number"),
        ("IWEBLENS_PORT", "70000", "IWEBLENS_PORT=70000 is out of range"),
        ("IWEBLENS_INPUT_SIZE", "400", "IWEBLENS_INPUT_SIZE=400 is out of range"),
        ("IWEBLENS_THREADS", "0", "IWEBLENS_THREADS=0 is out of range"),
    ],
)
def test_a_bad_value_is_refused_by_its_variable_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        Settings.from_env()
    assert str(raised.value) == message


def test_a_renamed_setting_keeps_its_published_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IWEBLENS_TIMEOUT", "7")
    assert Settings.from_env().model_wait_s == 7
    assert Settings.to_env(model_wait_s=9) == {"IWEBLENS_TIMEOUT": "9"}
    with pytest.raises(SettingsError, match="IWEBLENS_TIMEOUT=-1 is out of range"):
        Settings(model_wait_s=-1)
