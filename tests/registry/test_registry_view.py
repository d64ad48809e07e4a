"""RegistryView against a real registry server: sync, live updates, reconnect."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from lattice.v1 import registry_pb2, registry_pb2_grpc
from services.registry.server import build_server
from services.runtime.registry_view import RegistryState, RegistryView
from services.suite.ports import free_port
from tests.registry.conftest import settings_for
from tests.registry.support import RegistryClient
from tests.support.identity import caller_channel, signed_channel

EventType = registry_pb2.WatchEventType


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_view_syncs_and_follows_changes(registry_server, client: RegistryClient, tmp_path):
    await client.model("alpha")
    v1 = await client.version("alpha")
    await client.stub.SetAlias(
        registry_pb2.SetAliasRequest(model_name="alpha", alias="champion", version=v1.version)
    )
    await client.deploy("alpha", (1, 100))

    view = RegistryView(
        registry_server.address,
        channel=signed_channel(registry_server.address, tmp_path, "registry"),
    )
    seen: list[registry_pb2.WatchResponse] = []
    view.add_listener(seen.append)
    await view.start()
    try:
        await view.wait_synced(timeout=5)
        assert view.revision == 4
        assert view.model("alpha").latest_version == 1
        assert view.version("alpha", 1).artifact_digest == v1.artifact_digest
        assert view.alias("alpha", "champion") == 1
        assert [r.version for r in view.deployment("alpha").routes] == [1]
        assert set(view.online_versions()) == {("alpha", 1)}
        assert view.policy("alpha") is None
        assert seen[0].type == EventType.WATCH_EVENT_TYPE_RESET
        assert seen[-1].type == EventType.WATCH_EVENT_TYPE_SYNCED

        await client.version("alpha")
        await client.deploy("alpha", (1, 90), (2, 10))
        await _until(lambda: len(view.deployment("alpha").routes) == 2)
        assert set(view.online_versions()) == {("alpha", 1), ("alpha", 2)}
        assert seen[-1].type == EventType.WATCH_EVENT_TYPE_PUT
        assert seen[-1].deployment.revision == view.revision

        await client.deploy("alpha")
        await _until(lambda: not view.deployment("alpha").routes)
        assert view.online_versions() == {}
    finally:
        await view.stop()


async def test_view_filters_models(registry_server, client: RegistryClient, tmp_path):
    await client.model("alpha")
    await client.model("beta")
    view = RegistryView(
        registry_server.address,
        model_names=["beta"],
        channel=signed_channel(registry_server.address, tmp_path, "registry"),
    )
    await view.start()
    try:
        await view.wait_synced(timeout=5)
        assert view.model("alpha") is None
        assert view.model("beta") is not None
    finally:
        await view.stop()


async def test_view_reconnects_and_resumes_after_restart(tmp_path):
    port = free_port()
    settings = settings_for(tmp_path, port=port)
    server = await build_server(settings)
    await server.start()
    view = RegistryView(
        f"127.0.0.1:{port}",
        max_backoff=0.2,
        channel=signed_channel(f"127.0.0.1:{port}", tmp_path, "registry"),
    )
    events: list[registry_pb2.WatchResponse] = []
    view.add_listener(events.append)
    try:
        async with caller_channel(server) as channel:
            client = RegistryClient(registry_pb2_grpc.ModelRegistryServiceStub(channel))
            await client.model("alpha")
            await view.start()
            await view.wait_synced(timeout=5)
            assert view.revision == 1
        await server.stop(0)

        server = await build_server(settings)
        await server.start()
        async with caller_channel(server) as channel:
            client = RegistryClient(registry_pb2_grpc.ModelRegistryServiceStub(channel))
            await client.version("alpha")
        await _until(lambda: view.version("alpha", 1) is not None)
        # Resumed from revision 1: no RESET, just the missed change and SYNCED.
        resets = [e for e in events if e.type == EventType.WATCH_EVENT_TYPE_RESET]
        assert len(resets) == 1
        assert view.revision == 2
    finally:
        await view.stop()
        await server.stop(0)


_names = st.sampled_from(["a", "b", "c"])
_events = st.one_of(
    st.builds(lambda n: ("model", registry_pb2.Model(name=n)), _names),
    st.builds(
        lambda n, v: ("version", registry_pb2.ModelVersion(model_name=n, version=v)),
        _names,
        st.integers(1, 4),
    ),
    st.builds(
        lambda n, a, v: ("alias", registry_pb2.Alias(model_name=n, alias=a, version=v)),
        _names,
        st.sampled_from(["x", "y"]),
        st.integers(1, 4),
    ),
    st.builds(
        lambda n, v: (
            "deployment",
            registry_pb2.Deployment(
                model_name=n, routes=[registry_pb2.Route(version=v, weight=100)]
            ),
        ),
        _names,
        st.integers(1, 4),
    ),
    st.builds(
        lambda n, t: ("policy", registry_pb2.ModelPolicy(model_name=n, max_new_tokens=t)),
        _names,
        st.integers(0, 9),
    ),
)


def _tables(state: RegistryState) -> tuple:
    return (
        state.revision,
        state.models,
        state.versions,
        state.aliases,
        state.deployments,
        state.policies,
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_events, st.booleans()), max_size=30))
def test_a_snapshot_rebuilds_the_same_state(changes):
    source = RegistryState()
    for revision, ((kind, obj), is_delete) in enumerate(changes, start=1):
        if kind != "model" and obj.model_name not in source.models:
            continue  # the registry never holds objects of a model that does not exist
        event_type = (
            EventType.WATCH_EVENT_TYPE_DELETE if is_delete else EventType.WATCH_EVENT_TYPE_PUT
        )
        source.apply(registry_pb2.WatchResponse(type=event_type, revision=revision, **{kind: obj}))
    copy = RegistryState()
    for event in source.snapshot_events():
        copy.apply(event)
    normalise = lambda tables: tuple(  # noqa: E731 - empty per-model dicts mean nothing
        {k: v for k, v in t.items() if v != {}} if isinstance(t, dict) else t for t in tables
    )
    assert normalise(_tables(copy)) == normalise(_tables(source))
