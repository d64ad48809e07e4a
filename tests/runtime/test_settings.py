"""Settings: flags beat service-specific env, which beats generic env, which beats defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.runtime.settings import ServerSettings, load_settings


@dataclasses.dataclass(frozen=True)
class ExampleSettings(ServerSettings):
    port: int = 50099
    upstreams: tuple[str, ...] = ("a:1",)
    ratio: float = 0.5


def test_defaults_need_nothing():
    settings = load_settings(ExampleSettings, "example", [], env={})
    assert settings.port == 50099
    assert settings.data_dir == Path(".lattice")
    assert settings.reflection is True


def test_precedence_flag_then_service_env_then_generic_env():
    env = {"LATTICE_PORT": "1", "LATTICE_EXAMPLE_PORT": "2", "LATTICE_RATIO": "0.25"}
    assert load_settings(ExampleSettings, "example", [], env=env).port == 2
    assert load_settings(ExampleSettings, "example", ["--port", "3"], env=env).port == 3
    assert load_settings(ExampleSettings, "example", [], env=env).ratio == 0.25


def test_types_are_converted():
    env = {
        "LATTICE_UPSTREAMS": "x:1, y:2",
        "LATTICE_REFLECTION": "off",
        "LATTICE_DATA_DIR": "/tmp/d",
    }
    settings = load_settings(ExampleSettings, "example", [], env=env)
    assert settings.upstreams == ("x:1", "y:2")
    assert settings.reflection is False
    assert settings.data_dir == Path("/tmp/d")


def test_bad_value_names_the_variable():
    with pytest.raises(SystemExit, match="LATTICE_EXAMPLE_PORT"):
        load_settings(ExampleSettings, "example", [], env={"LATTICE_EXAMPLE_PORT": "many"})


def test_unknown_flag_is_refused():
    with pytest.raises(SystemExit):
        load_settings(ExampleSettings, "example", ["--no-such-flag", "1"], env={})
