"""Stubs for other languages: one buf template per language, so a missing plugin
fails only its own language (the compile checks are `make check-stubs-ts` and
`make check-stubs-java`, run by .ci/run)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
LANGUAGE_PLUGINS = {
    "go": {"protoc-gen-go", "protoc-gen-go-grpc"},
    "ts": {"protoc-gen-ts_proto"},
    "java": {"java", "protoc-gen-grpc-java"},
}


def plugin_names(template: Path) -> set[str]:
    plugins = yaml.safe_load(template.read_text())["plugins"]
    return {Path(p.get("local") or p.get("protoc_builtin")).name for p in plugins}


def test_each_language_has_its_own_template_naming_only_its_plugins():
    templates = sorted(PROTOS.glob("buf.gen*.yaml"))
    assert [t.name for t in templates] == [f"buf.gen.{lang}.yaml" for lang in ("go", "java", "ts")]
    for lang, plugins in LANGUAGE_PLUGINS.items():
        assert plugin_names(PROTOS / f"buf.gen.{lang}.yaml") == plugins


@pytest.mark.parametrize("lang", ["go", "java"])
def test_a_missing_plugin_fails_its_language_with_what_to_install(lang, tmp_path):
    # A PATH with node (for buf) but none of the language's tools.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "node", "dirname", "mktemp", "rm", "ln", "find", "wc", "cat"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if found:
            (bin_dir / tool).symlink_to(found)
    result = subprocess.run(
        ["bash", str(PROTOS / "check-stubs.sh"), lang],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(bin_dir)},
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"stubs-{lang}: no protoc")
    assert "install" in result.stderr
