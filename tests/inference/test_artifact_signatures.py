"""Signed artifacts: inference verifies the registry's signature and the digest on
every load, also of its own unpacked copy, and refuses (then re-fetches) a
tampered one. Real registry, real inference, a tiny real model."""

from __future__ import annotations

import base64
import json

from lattice.v1 import inference_pb2
from services.inference.fetch import MANIFEST
from services.inference.serving import VersionState
from services.runtime.keys import LocalKeyRing
from services.runtime.signatures import ArtifactSignatures
from services.suite.embedded import deploy_lm, generate_request

REFUSED = "lattice_inference_artifact_copies_refused_total"


async def _reload(lab, name: str = "lm") -> None:
    """Take version 1 offline and back: the next load goes through the fetcher."""
    await lab.deploy(name, {})
    await lab.wait_unloaded(name, 1)
    await lab.deploy(name, {1: 100})


async def test_a_flipped_byte_in_the_local_copy_is_refused_and_fetched_again(lab, model_dirs):
    await deploy_lm(lab, model_dirs)
    reference = await lab.stub.Generate(generate_request("lm", max_new_tokens=4, skip_cache=True))
    copy = lab.root / "inference" / "artifacts" / lab.entry("lm", 1).digest
    weights = next(p for p in copy.iterdir() if p.suffix == ".safetensors")
    original = weights.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    weights.write_bytes(bytes(flipped))

    await _reload(lab)
    await lab.wait_state("lm", 1, VersionState.READY)
    assert lab.metric(REFUSED) == 1
    assert weights.read_bytes() == original  # the registry's copy replaced it
    again = await lab.stub.Generate(generate_request("lm", max_new_tokens=4, skip_cache=True))
    assert again.text == reference.text

    # An added file, or a manifest rewritten to match a change, is caught too.
    (copy / "extra.py").write_text("import os\n")
    await _reload(lab)
    await lab.wait_state("lm", 1, VersionState.READY)
    assert lab.metric(REFUSED) == 2 and not (copy / "extra.py").exists()
    record = json.loads((copy / MANIFEST).read_text())
    config = copy / "config.json"
    config.write_text(config.read_text().replace("}", ', "evil": 1}', 1))
    record["files"]["config.json"] = "0" * 64
    (copy / MANIFEST).write_text(json.dumps(record))
    await _reload(lab)
    await lab.wait_state("lm", 1, VersionState.READY)
    assert lab.metric(REFUSED) == 3 and "evil" not in config.read_text()


async def test_an_artifact_without_a_valid_registry_signature_is_not_loaded(
    lab, model_dirs, tmp_path
):
    await lab.create_model("lm")
    registered = await lab.register("lm", model_dirs["lm1"])
    signature_file = lab.tampered_blob(registered.digest).with_suffix(".sig")
    # Signed by a key ring that is not the suite's.
    stranger = ArtifactSignatures(LocalKeyRing.open_or_create(tmp_path / "other" / "ring.json"))
    kid, forged = stranger.sign(registered.digest)
    signature_file.write_text(
        json.dumps({"kid": kid, "signature": base64.b64encode(forged).decode()})
    )
    await lab.deploy("lm", {1: 100})
    await lab.wait_state("lm", 1, VersionState.FAILED)
    listing = await lab.stub.ListLoadedModels(inference_pb2.ListLoadedModelsRequest())
    (model,) = listing.models
    assert "signature does not match" in model.error
    assert not (lab.root / "inference" / "artifacts" / registered.digest).exists()
