"""One Redis client factory for every service: a single server, Sentinel or Cluster,
chosen by the URL (`LATTICE_REDIS_URL`).

    redis://[[user]:password@]host:port[/db]        one server (also rediss://, unix://)
    redis+sentinel://[[user]:password@]host:port[,host:port...]/<master>[/<db>]
                     [?sentinel_password=...]
    redis+cluster://[[user]:password@]host:port[,host:port...]

Sentinel: the hosts are the sentinels (default port 26379); the client asks them
which server is the primary of `<master>`, and asks again after a connection
fails, so a failover is followed by redis-py itself (`redis.asyncio.sentinel`),
with no failover logic of ours. The userinfo's password is the data servers'
(`requirepass`); sentinels protected by their own password take
`sentinel_password`.

Cluster: the hosts are startup nodes (any few; default port 6379); redis-py's
`RedisCluster` discovers the rest and follows MOVED/ASK redirections. A cluster
has only database 0. Multi-key commands must stay within one hash slot: the
quota scripts hash-tag each subject's keys (`{tenant:...}`), and the cache's
batched lookups use `multi_get` below, never a cross-slot MGET.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

#: Either kind of client `connect` returns; both speak the same commands.
AnyRedis = aioredis.Redis | RedisCluster

_DEFAULT_PORTS = {"sentinel": 26379, "cluster": 6379}


@dataclasses.dataclass(frozen=True)
class RedisTarget:
    """What a `redis+sentinel://` or `redis+cluster://` URL names."""

    mode: Literal["sentinel", "cluster"]
    nodes: tuple[tuple[str, int], ...]
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def _hosts(netloc: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [::1]:26379
            host, _, rest = part[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ValueError(f"bad port in Redis URL {url!r}: {part!r}") from None
        if not host or not 0 < port < 65536:
            raise ValueError(f"bad host:port in Redis URL {url!r}: {part!r}")
        nodes.append((host, port))
    if not nodes:
        raise ValueError(f"no hosts in Redis URL {url!r}")
    return tuple(nodes)


def parse_ha_url(url: str) -> RedisTarget | None:
    """The Sentinel or Cluster target a URL names, or None for a plain Redis URL.
    Raises ValueError, naming the URL's form, when it is malformed."""
    scheme, _, rest = url.partition("://")
    mode = {"redis+sentinel": "sentinel", "redis+cluster": "cluster"}.get(scheme.lower())
    if mode is None:
        return None
    parts = urlsplit("x://" + rest)
    userinfo, _, netloc = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    nodes = _hosts(netloc, _DEFAULT_PORTS[mode], url)
    path = [unquote(p) for p in parts.path.split("/") if p]
    query = parse_qs(parts.query)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} in Redis URL {url!r}")
    if mode == "sentinel":
        if not path or len(path) > 2:
            raise ValueError(
                f"Redis URL {url!r}: expected "
                "redis+sentinel://[:password@]host:port[,host:port...]/<master>[/<db>]"
            )
        master, db_text = path[0], path[1] if len(path) == 2 else "0"
    else:
        if query or (path and path != ["0"]):
            raise ValueError(
                f"Redis URL {url!r}: expected redis+cluster://[:password@]host:port[,host:port...]"
                " (a cluster has only database 0)"
            )
        master, db_text = "", "0"
    if not db_text.isdigit():
        raise ValueError(f"Redis URL {url!r}: database must be a number, got {db_text!r}")
    return RedisTarget(
        mode=mode,  # type: ignore[arg-type]
        nodes=nodes,
        master=master,
        db=int(db_text),
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=query.get("sentinel_password", [None])[0],
    )


def connect(url: str, **options: Any) -> AnyRedis:
    """An asyncio client for `url` (see the module docstring for its forms);
    `options` are connection options (socket_timeout, retry, ...) for every
    server it talks to."""
    target = parse_ha_url(url)
    if target is None:
        return aioredis.Redis.from_url(url, **options)
    if target.mode == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            **options,
        )
    timeouts = {
        k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")
    }
    sentinel = Sentinel(
        list(target.nodes),
        sentinel_kwargs={"password": target.sentinel_password, **timeouts},
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )
    return sentinel.master_for(target.master)


def multi_get(client: AnyRedis) -> Callable[[Sequence[str]], Awaitable[list[Any]]]:
    """GET of many keys in one round trip per server: MGET on one server; on a
    Cluster, redis-py's slot-grouped MGETs (`mget_nonatomic`, one pipeline per
    node), since one MGET across slots is refused (CROSSSLOT)."""
    if isinstance(client, RedisCluster):
        return client.mget_nonatomic
    return client.mget
