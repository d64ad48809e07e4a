"""The real suite (registry, inference, trainer, gateway) in-process, shared by the package."""

from __future__ import annotations

import pytest

from services.suite.tiny_models import build_tiny_causal_lm, build_tiny_encoder
from tests.reliability.fuzzing import TALLY
from tests.sdk.real_stack import RealStack, running_stack


@pytest.fixture(scope="package")
def stack(tmp_path_factory) -> RealStack:
    """Real registry + inference + trainer + gateway with a tiny LM and encoder online."""
    model_dir = build_tiny_causal_lm(tmp_path_factory.mktemp("model"), n_positions=512)
    encoder_dir = build_tiny_encoder(tmp_path_factory.mktemp("encoder"))
    yield from running_stack(tmp_path_factory.mktemp("stack"), model_dir, encoder_dir)


def pytest_terminal_summary(terminalreporter) -> None:
    """The fuzz run's figure: how many hostile requests, and the codes they got."""
    if TALLY.codes:
        terminalreporter.write_line(TALLY.summary())
