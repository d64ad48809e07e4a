"""Which version serves a request, decided from the local registry view.

No registry call on the hot path: the view is kept current by the Watch
stream, and if the registry goes away the last known view keeps routing.
`name` picks among online versions by weight (random, or a stable hash of
the caller's `routing_key` for sticky routing); `name@alias` and
`name:version` pin. The gateway forwards the pinned "name:version" it chose.
A weighted pick leaves out versions no replica reports READY (a canary that
failed to load, one still loading) while another routed version is READY.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Collection
from typing import Protocol

from lattice.errors import FailedPrecondition, NotFound, Unavailable
from lattice.refs import ModelRef
from lattice.routing import pick_weighted
from lattice.v1 import registry_pb2


class DeploymentView(Protocol):
    """The part of `services.runtime.registry_view.RegistryView` routing reads."""

    def model(self, name: str) -> registry_pb2.Model | None: ...
    def models(self) -> list[registry_pb2.Model]: ...
    def version(self, name: str, version: int) -> registry_pb2.ModelVersion | None: ...
    def deployment(self, name: str) -> registry_pb2.Deployment | None: ...
    def alias(self, name: str, alias: str) -> int | None: ...
    def policy(self, name: str) -> registry_pb2.ModelPolicy | None: ...


@dataclasses.dataclass(frozen=True)
class RouteDecision:
    name: str
    version: int
    #: A version that gets a copy of this request (0 = none).
    shadow_version: int = 0
    #: "weighted", "sticky", "alias", "version" or "retiring".
    reason: str = "weighted"

    @property
    def target(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def chosen_here(self) -> bool:
        """The gateway picked the version (the caller did not pin one)."""
        return self.reason in ("weighted", "sticky", "retiring")

    @property
    def shadow_target(self) -> str:
        return f"{self.name}:{self.shadow_version}" if self.shadow_version else ""


class Router:
    """Routes model references to concrete versions using a `DeploymentView`."""

    def __init__(
        self,
        view: DeploymentView,
        *,
        ready: Callable[[], bool] = lambda: True,
        ready_versions: Callable[[str], Collection[int] | None] = lambda _name: None,
        rng: random.Random | None = None,
    ) -> None:
        """`ready_versions(name)` is what the replicas report READY (None = unknown;
        see `replica_states`): weighted picks leave out routed versions that are not,
        and when none is, a version still READY (the previous deployment's) serves,
        as inference itself does while a rollout loads."""
        self._view = view
        self._rng = rng or random.Random()
        self._ready_versions = ready_versions
        #: False until the view has synced once; unknown models are then UNAVAILABLE.
        self._ready = ready

    def policy(self, name: str) -> registry_pb2.ModelPolicy | None:
        return self._view.policy(name)

    def known(self, name: str) -> bool:
        return self._view.model(name) is not None

    def model(self, name: str) -> registry_pb2.Model | None:
        return self._view.model(name)

    def online_models(self) -> list[registry_pb2.Model]:
        """Models with at least one version taking traffic, by name."""
        online = []
        for model in self._view.models():
            deployment = self._view.deployment(model.name)
            if deployment is not None and any(r.weight > 0 for r in deployment.routes):
                online.append(model)
        return sorted(online, key=lambda m: m.name)

    def route(self, ref: ModelRef, routing_key: str = "") -> RouteDecision:
        deployment = self._view.deployment(ref.name)
        if self._view.model(ref.name) is None:
            if not self._ready():
                raise Unavailable("routing table not loaded yet (registry unreachable); retry")
            raise NotFound(f"model {ref.name!r} not found")
        if ref.alias:
            version = self._view.alias(ref.name, ref.alias)
            if version is None:
                raise NotFound(f"alias {ref.alias!r} of model {ref.name!r} not found")
            return self._pinned(ref.name, version, deployment, "alias")
        if ref.version:
            if self._view.version(ref.name, ref.version) is None:
                raise NotFound(f"version {ref.version} of model {ref.name!r} not found")
            return self._pinned(ref.name, ref.version, deployment, "version")
        routes = [r for r in (deployment.routes if deployment else ()) if r.weight > 0]
        if not routes:
            raise FailedPrecondition(f"model {ref.name!r} is offline (no version has traffic)")
        shadow = deployment.shadow_version if deployment else 0
        ready = self._ready_versions(ref.name)
        if ready is not None:
            live = [r for r in routes if r.version in ready]
            if live:
                routes = live
            elif ready:  # nothing routed is READY yet: the retiring version serves
                return RouteDecision(ref.name, max(ready), reason="retiring")
            if ready and shadow not in ready:  # it failed to load, or is loading
                shadow = 0
        if len(routes) == 1:
            chosen = routes[0].version
        else:
            pairs = [(r.version, r.weight) for r in routes]
            chosen = pick_weighted(ref.name, pairs, routing_key, rng=self._rng)
        return RouteDecision(
            ref.name,
            chosen,
            shadow_version=shadow,
            reason="sticky" if routing_key else "weighted",
        )

    @staticmethod
    def _pinned(
        name: str, version: int, deployment: registry_pb2.Deployment | None, reason: str
    ) -> RouteDecision:
        online = deployment is not None and (
            any(r.version == version for r in deployment.routes)
            or deployment.shadow_version == version
        )
        if not online:
            raise FailedPrecondition(f"version {version} of model {name!r} is not online")
        return RouteDecision(name, version, reason=reason)
