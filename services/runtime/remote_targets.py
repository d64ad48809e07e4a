"""Which remote backends a version may name: an allowlist of host:port patterns.

A version whose artifact lives elsewhere (`triton://host:port/model`, or a
`triton_address` param or tag) makes the inference service connect to that
address. Unchecked, anyone allowed to create a version could point inference
at any host the cluster can reach (server-side request forgery). The
registry refuses such a version with INVALID_ARGUMENT unless every address
it names matches the allowlist, and inference checks again before it
connects (its own allowlist: a registry row is not trusted on its own).

Patterns are shell-style (`fnmatch`) over a lower-case `host:port`, e.g.
`triton.lattice.svc.cluster.local:8001`, `*.gpu.internal:8001`,
`127.0.0.1:*`. The empty list (the default) allows no remote backend.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from lattice.errors import InvalidArgument

#: The registry's own artifact scheme: stored here, nothing remote.
LOCAL_SCHEME = "lattice-artifact"
#: Params/tags that name a backend address.
ADDRESS_KEYS = ("triton_address",)


def _normalise(address: str) -> tuple[str, str] | None:
    """(host, port) lower-cased, IPv6 without brackets; None when `address` is not
    exactly host:port (no port, userinfo, a path ...)."""
    try:
        parts = urlsplit(f"//{address}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or port is None or parts.username or parts.password:
        return None
    if parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname.lower(), str(port)


def _split_pattern(pattern: str) -> tuple[str, str]:
    host, _, port = pattern.strip().lower().rpartition(":")
    return host.removeprefix("[").removesuffix("]"), port


class RemoteAllowlist:
    """Decides whether a backend address may be used (see the module docstring)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(p.strip().lower() for p in patterns if p.strip())
        # Host and port match apart, so an IPv6 pattern's brackets are not a glob set.
        self._parts = [_split_pattern(p) for p in self.patterns]

    def allows(self, address: str) -> bool:
        normalised = _normalise(address)
        if normalised is None:
            return False
        host, port = normalised
        return any(
            fnmatch.fnmatchcase(host, host_pattern) and fnmatch.fnmatchcase(port, port_pattern)
            for host_pattern, port_pattern in self._parts
        )

    def check(self, address: str, field: str) -> None:
        """InvalidArgument unless `address` matches a pattern."""
        if _normalise(address) is None:
            raise InvalidArgument(field, f"{address[:100]!r} is not host:port")
        if not self.allows(address):
            allowed = ", ".join(self.patterns) or "none configured"
            raise InvalidArgument(
                field,
                f"backend address {address[:100]!r} is not in the remote allowlist "
                f"({allowed}); ask an operator to add it (remote_allowlist)",
            )

    def check_version(
        self, artifact_uri: str, params: Mapping[str, str], tags: Mapping[str, str]
    ) -> None:
        """Every address a version names must be allowed; local artifacts name none."""
        scheme = artifact_uri.split("://", 1)[0].lower() if "://" in artifact_uri else ""
        if scheme and scheme != LOCAL_SCHEME:
            self.check(urlsplit(artifact_uri).netloc, "artifact_uri")
        for field, values in (("params", params), ("tags", tags)):
            for key in ADDRESS_KEYS:
                if key in values:
                    self.check(values[key], f"{field}[{key!r}]")
