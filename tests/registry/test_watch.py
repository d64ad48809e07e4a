"""Watch: replay exactly the missed events, snapshots when too old, fan-out, slow readers."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from lattice.v1 import registry_pb2, registry_pb2_grpc
from services.registry.server import build_server
from services.registry.watch import WatchHub
from services.runtime.registry_view import RegistryState
from tests.registry.conftest import settings_for
from tests.registry.support import RegistryClient
from tests.support.identity import ADMIN, caller_channel

T = registry_pb2.WatchEventType
PUT, RESET, SYNCED = T.WATCH_EVENT_TYPE_PUT, T.WATCH_EVENT_TYPE_RESET, T.WATCH_EVENT_TYPE_SYNCED


async def _read_until_synced(stream) -> list[registry_pb2.WatchResponse]:
    events = []
    async for event in stream:
        events.append(event)
        if event.type == SYNCED:
            return events
    raise AssertionError("stream ended before SYNCED")


async def _changes(client: RegistryClient) -> None:
    await client.version("m")
    await client.stub.SetAlias(registry_pb2.SetAliasRequest(model_name="m", alias="a", version=2))
    await client.deploy("m", (1, 50), (2, 50))
    await client.stub.SetPolicy(
        registry_pb2.SetPolicyRequest(
            policy=registry_pb2.ModelPolicy(model_name="m", max_new_tokens=8)
        )
    )
    await client.stub.DeleteAlias(registry_pb2.DeleteAliasRequest(model_name="m", alias="a"))


async def test_reconnect_receives_exactly_the_missed_events(client: RegistryClient):
    await client.model("m")
    await client.version("m")
    # A witness that stays connected the whole time.
    witness = client.stub.Watch(registry_pb2.WatchRequest(from_revision=0))
    await _read_until_synced(witness)

    first = client.stub.Watch(registry_pb2.WatchRequest(from_revision=0))
    initial = await _read_until_synced(first)
    assert initial[0].type == RESET and initial[-1].revision == 2
    last_seen = initial[-1].revision
    first.cancel()

    await _changes(client)
    expected = []
    async for event in witness:
        expected.append(event)
        if event.revision == 7 and event.WhichOneof("object") == "alias":
            break
    witness.cancel()

    resumed = client.stub.Watch(registry_pb2.WatchRequest(from_revision=last_seen))
    replay = await _read_until_synced(resumed)
    assert replay[:-1] == expected
    assert [e.revision for e in replay[:-1]] == [3, 3, 4, 5, 6, 7]  # version+model share one
    assert replay[-1] == registry_pb2.WatchResponse(type=SYNCED, revision=7)
    # Then live: no duplicates, the next change only.
    await client.deploy("m", (2, 100))
    live = await anext(aiter(resumed))
    assert live.revision == 8 and live.deployment.routes[0].version == 2
    resumed.cancel()


async def test_too_old_revision_gets_reset_and_snapshot(tmp_path):
    server = await build_server(settings_for(tmp_path, watch_retain_revisions=3))
    await server.start()
    try:
        async with caller_channel(server) as channel:
            client = RegistryClient(registry_pb2_grpc.ModelRegistryServiceStub(channel))
            await client.model("m")
            await client.version("m")
            await _changes(client)  # revision 7 now; the log keeps 5..7
            recent = await _read_until_synced(
                client.stub.Watch(registry_pb2.WatchRequest(from_revision=4))
            )
            assert [e.revision for e in recent] == [5, 6, 7, 7]
            for stale in (1, 3, 99):  # too old, or from a future this registry never had
                events = await _read_until_synced(
                    client.stub.Watch(registry_pb2.WatchRequest(from_revision=stale))
                )
                assert events[0].type == RESET and events[-1].revision == 7
                state = RegistryState()
                for event in events:
                    state.apply(event)
                assert state.models["m"].latest_version == 2
                assert state.aliases.get("m", {}) == {}
                assert state.policies["m"].max_new_tokens == 8
                assert len(state.deployments["m"].routes) == 2
    finally:
        await server.stop(0)


async def test_hundred_subscribers_all_see_a_change(
    registry_server, client: RegistryClient, tmp_path
):
    await client.model("m")
    await client.version("m")
    channels = [caller_channel(registry_server) for _ in range(10)]
    try:
        streams = [
            registry_pb2_grpc.ModelRegistryServiceStub(channels[i % 10]).Watch(
                registry_pb2.WatchRequest(from_revision=2)
            )
            for i in range(100)
        ]
        await asyncio.gather(*(_read_until_synced(s) for s in streams))
        deployed = await client.deploy("m", (1, 100))
        arrived = await asyncio.wait_for(
            asyncio.gather(*(anext(aiter(s)) for s in streams)), timeout=20
        )
        assert all(e.deployment == deployed for e in arrived)
        for stream in streams:
            stream.cancel()
    finally:
        for chan in channels:
            await chan.close()


async def test_model_filter(client: RegistryClient):
    await client.model("m")
    await client.model("other")
    stream = client.stub.Watch(registry_pb2.WatchRequest(model_names=["m"]))
    events = await _read_until_synced(stream)
    assert {e.model.name for e in events if e.WhichOneof("object")} == {"m"}
    await client.version("other")
    await client.version("m")
    event = await anext(aiter(stream))
    assert event.version.model_name == "m"
    stream.cancel()


async def test_watch_rejects_bad_requests(client: RegistryClient):
    for request in (
        registry_pb2.WatchRequest(from_revision=-1),
        registry_pb2.WatchRequest(model_names=["Bad Name"]),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in client.stub.Watch(request):
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _batch(state: RegistryState, revision: int) -> list[registry_pb2.WatchResponse]:
    model = registry_pb2.Model(name="m", latest_version=revision)
    events = [registry_pb2.WatchResponse(type=PUT, revision=revision, model=model)]
    for event in events:
        state.apply(event)
    return events


async def test_slow_subscriber_is_reset_without_blocking_others():
    state = RegistryState()
    hub = WatchHub(lambda: state, queue_size=4)
    slow = hub.subscribe(0, (), ADMIN)
    fast = hub.subscribe(0, (), ADMIN)
    assert [e.type for e in [await anext(slow), await anext(slow)]] == [RESET, SYNCED]
    assert [e.type for e in [await anext(fast), await anext(fast)]] == [RESET, SYNCED]
    for revision in range(1, 11):
        hub.publish(revision, _batch(state, revision))
        assert (await anext(fast)).revision == revision  # never held up by `slow`
    # `slow` overflowed: it gets a fresh snapshot of the latest state, then live events.
    recovered = [await anext(slow) for _ in range(3)]
    assert [e.type for e in recovered] == [RESET, PUT, SYNCED]
    assert recovered[1].model.latest_version == 10 and recovered[2].revision == 10
    hub.publish(11, _batch(state, 11))
    assert (await anext(slow)).revision == 11
    assert hub.subscriber_count == 2
    await slow.aclose()
    await fast.aclose()
    assert hub.subscriber_count == 0
