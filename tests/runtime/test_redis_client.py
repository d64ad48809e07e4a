"""The one Redis client factory: its URL forms, and clients for real Sentinel and
Cluster topologies (the quota and cache tests drive them harder)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from services.runtime.redis_client import RedisTarget, connect, multi_get, parse_ha_url


def test_plain_urls_are_left_to_redis_py():
    assert parse_ha_url("redis://127.0.0.1:6379/0") is None
    assert parse_ha_url("rediss://:secret@cache:6380/2") is None
    assert isinstance(connect("redis://127.0.0.1:6379/0"), aioredis.Redis)


def test_sentinel_url_names_sentinels_master_db_and_passwords():
    target = parse_ha_url(
        "redis+sentinel://:p%40ss@s1:26380,s2,[::1]:26381/lattice/3?sentinel_password=sp"
    )
    assert target == RedisTarget(
        mode="sentinel",
        nodes=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        master="lattice",
        db=3,
        password="p@ss",
        sentinel_password="sp",
    )


def test_cluster_url_names_startup_nodes():
    target = parse_ha_url("redis+cluster://app:pw@n1:7000,n2:7001")
    assert target == RedisTarget(
        mode="cluster", nodes=(("n1", 7000), ("n2", 7001)), username="app", password="pw"
    )
    assert parse_ha_url("redis+cluster://n1/0") is not None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://s1:26379", "<master>"),
        ("redis+sentinel://s1:26379/a/b/c", "<master>"),
        ("redis+sentinel://s1:26379/lattice/zero", "database must be a number"),
        ("redis+sentinel://s1:port/lattice", "bad port"),
        ("redis+sentinel:///lattice", "no hosts"),
        ("redis+cluster://n1:7000/2", "only database 0"),
        ("redis+cluster://n1:7000?tls=1", "unknown option"),
        ("redis+cluster://n1:99999", "bad host:port"),
    ],
)
def test_malformed_urls_say_what_form_is_expected(url, message):
    with pytest.raises(ValueError, match=message):
        parse_ha_url(url)


async def test_a_sentinel_url_reaches_the_primary(redis_sentinel):
    client = connect(redis_sentinel.url, socket_timeout=1)
    try:
        await client.set("greeting", "hello")
        info = await client.info("server")
        assert info["tcp_port"] == redis_sentinel.primary.port
        assert await client.get("greeting") == b"hello"
    finally:
        await client.aclose()


async def test_cluster_multi_get_spans_slots_where_mget_cannot(redis_cluster):
    client = connect(redis_cluster.url, socket_timeout=1)
    try:
        assert isinstance(client, RedisCluster)
        keys = [f"eco:multi:{i}" for i in range(20)]
        for i, key in enumerate(keys):
            await client.set(key, str(i))
        assert len({client.keyslot(k) for k in keys}) > 1
        with pytest.raises(RedisClusterException, match="same key slot"):
            await client.mget(keys)
        values = await multi_get(client)([*keys, "eco:multi:absent"])
        assert values == [str(i).encode() for i in range(20)] + [None]
    finally:
        await client.aclose()
