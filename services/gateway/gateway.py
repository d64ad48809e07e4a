"""The gateway's request pipeline: authenticate, authorise, admit, route, forward.

Transport-free: the servicers hand in the method name, the call metadata and
the request; tests can drive `Gateway` without a gRPC server in front of it.
Every stage gets its own span (the token never goes into one) and failures
are counted by stage and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Sequence
from typing import Any, NamedTuple

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from lattice.errors import FailedPrecondition, LatticeError
from lattice.refs import ModelRef, parse_model_ref
from lattice.v1 import registry_pb2
from services.gateway.auth import Authenticator, Principal
from services.gateway.authz import require_enabled, require_scope, require_tenant, tenant_allowed
from services.gateway.metrics import GatewayMetrics
from services.gateway.quotas import Admission, QuotaLimiter, TenantRecords
from services.gateway.routing import RouteDecision, Router
from services.gateway.stream_limits import StreamSlots, idle_limited
from services.gateway.upstreams import ReplicaPool, Upstream
from services.runtime.decoding import decoded
from services.runtime.identity import Caller

log = logging.getLogger(__name__)


class Call(NamedTuple):
    """What the gateway needs from an inbound RPC besides its request."""

    method: str
    metadata: Sequence[tuple[str, str | bytes]]


class Gateway:
    """Authn -> authz -> quota -> routing -> upstream, for every RPC it serves."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        router: Router,
        quotas: QuotaLimiter,
        inference: ReplicaPool,
        upstreams: dict[str, Upstream],
        metrics: GatewayMetrics,
        tracer: trace.Tracer | None = None,
        max_shadow_in_flight: int = 32,
        max_request_bytes: int = 0,
        max_streams_per_tenant: int = 0,
        stream_idle_seconds: float = 0.0,
        tenant_records: TenantRecords = lambda _tenant: None,
    ) -> None:
        """`max_request_bytes` caps an `Encoded` request (0 = no cap of our own);
        `max_streams_per_tenant` and `stream_idle_seconds` bound server streams
        (see `stream_limits`; 0 = no bound)."""
        self._authenticator = authenticator
        self._tenant_records = tenant_records
        self._router = router
        self._quotas = quotas
        self._inference = inference
        self._upstreams = upstreams
        self._metrics = metrics
        self._tracer = tracer or trace.get_tracer("lattice.gateway")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shadow_slots = max_shadow_in_flight
        self._max_request_bytes = max_request_bytes
        self._stream_slots = StreamSlots(max_streams_per_tenant)
        self._stream_idle = stream_idle_seconds
        quotas.on_usage = lambda subject, kind, used: metrics.quota_used_for(subject, kind).set(
            used
        )
        inference.on_health = lambda address, ok: metrics.upstream_healthy.labels(address).set(
            1 if ok else 0
        )
        for replica in inference.replicas:
            metrics.upstream_healthy.labels(replica.address).set(1)

    # --- stages ------------------------------------------------------------------------

    # Stage spans are children of the RPC's server span but are not made "current":
    # nothing runs inside them that needs it, and it makes each one ~35% cheaper.

    def _fail(self, span: trace.Span, stage: str, exc: LatticeError) -> None:
        reason = getattr(exc, "reason", "") or exc.code.name.lower()
        span.set_status(Status(StatusCode.ERROR, exc.code.name))
        span.set_attribute("lattice.reject.reason", reason)
        self._metrics.rejections.labels(stage, reason).inc()

    async def authorize(self, call: Call) -> Principal:
        """Authenticate the caller and check the method's scope."""
        started = time.perf_counter()
        span = self._tracer.start_span("gateway.authn")
        try:
            principal = await self._authenticator.authenticate(call.metadata)
            span.set_attribute("lattice.tenant", principal.tenant)
        except LatticeError as exc:
            self._fail(span, "authn", exc)
            raise
        finally:
            span.end()
        self._metrics.auth_seconds.observe(time.perf_counter() - started)
        span = self._tracer.start_span("gateway.authz", attributes={"rpc.method": call.method})
        try:
            require_enabled(principal, self._tenant_records(principal.tenant))
            require_scope(principal, call.method)
        except LatticeError as exc:
            self._fail(span, "authz", exc)
            raise
        finally:
            span.end()
        return principal

    def _route(self, principal: Principal, ref: ModelRef, routing_key: str) -> RouteDecision:
        span = self._tracer.start_span("gateway.route")
        try:
            try:
                require_tenant(principal, ref.name, self._router.policy(ref.name))
            except LatticeError as exc:
                self._fail(span, "authz", exc)
                raise
            decision = self._router.route(ref, routing_key)
            span.set_attribute("lattice.model", decision.target)
            span.set_attribute("lattice.route.reason", decision.reason)
            if decision.shadow_version:
                span.set_attribute("lattice.route.shadow", decision.shadow_target)
        except LatticeError as exc:
            span.set_status(Status(StatusCode.ERROR, exc.code.name))
            raise
        finally:
            span.end()
        self._metrics.routes_for(ref.name, str(decision.version), decision.reason).inc()
        return decision

    async def _admit(self, principal: Principal, model: str) -> Admission | None:
        span = self._tracer.start_span("gateway.quota")
        try:
            return await self._quotas.admit(principal.tenant, model)
        except LatticeError as exc:
            self._fail(span, "quota", exc)
            raise
        finally:
            span.end()

    def _model_label(self, ref: ModelRef) -> str:
        """The metrics label: unknown names collapse, so callers cannot inflate cardinality."""
        return ref.name if self._router.known(ref.name) else "(unknown)"

    @staticmethod
    def _forward_metadata(principal: Principal) -> list[tuple[str, str]]:
        """Who the upstream call is for; the channel signs it into an internal token."""
        return Caller(principal.tenant, principal.subject, principal.scopes).metadata()

    # --- inference ---------------------------------------------------------------------

    def _decode(self, request: Any) -> Any:
        """The request message; one still `Encoded` is parsed only now, after authn."""
        return decoded(request, self._max_request_bytes)

    async def invoke(self, call: Call, request: Any) -> Any:
        """Generate or Embed: routed, quota-checked, failed over across replicas.

        `request` is the message, or `Encoded` bytes parsed after authentication.
        """
        method = call.method.rsplit("/", 1)[-1]
        tenant, model, code = "", "", "OK"
        try:
            principal = await self.authorize(call)
            tenant = principal.tenant
            request = self._decode(request)
            ref = parse_model_ref(request.model)
            model = self._model_label(ref)
            decision = self._route(principal, ref, request.routing_key)
            admission = await self._admit(principal, decision.name)
            metadata = self._forward_metadata(principal)
            shadow = None
            if decision.shadow_version:
                shadow = _with_model(request, decision.shadow_target)
            # The request was decoded for this call alone: pin its model in place
            # rather than copying the message.
            request.model = decision.target
            try:
                response = await self._inference.unary(method, request, metadata)
            except FailedPrecondition:
                if not decision.chosen_here:
                    raise
                # The replica's registry view is newer than ours and the version we
                # picked is already offline there: let the replica pick.
                request.model = decision.name
                response = await self._inference.unary(method, request, metadata)
            tokens = response.usage.total_tokens
            self._charge(admission, tenant, model, tokens)
            if shadow is not None:
                self._shadow(method, shadow, metadata)
            return response
        except LatticeError as exc:
            code = exc.code.name
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except BaseException:
            code = "INTERNAL"
            raise
        finally:
            self._metrics.requests_for(tenant, model, code).inc()

    async def invoke_stream(self, call: Call, request: Any) -> AsyncGenerator[Any, None]:
        """GenerateStream: charged its final usage; a stream cut short (cancelled,
        failed mid-way) is charged its prompt plus the tokens delivered."""
        tenant, model, code = "", "", "OK"
        admission: Admission | None = None
        final_tokens: int | None = None
        prompt_tokens = 0
        delivered = 0
        try:
            principal = await self.authorize(call)
            tenant = principal.tenant
            request = self._decode(request)
            ref = parse_model_ref(request.model)
            model = self._model_label(ref)
            with self._stream_slots.hold(tenant):
                decision = self._route(principal, ref, request.routing_key)
                admission = await self._admit(principal, decision.name)
                forwarded = _with_model(request, decision.target)
                metadata = self._forward_metadata(principal)
                if decision.shadow_version:
                    self._shadow(
                        "GenerateStream", _with_model(request, decision.shadow_target), metadata
                    )
                stream = self._repinning_stream(decision, forwarded, metadata)
                async with contextlib.aclosing(stream):
                    async for message in stream:
                        if message.prompt_tokens:
                            prompt_tokens = message.prompt_tokens
                        if message.HasField("usage"):
                            final_tokens = message.usage.total_tokens
                        elif message.delta:
                            delivered += 1
                        yield message
        except LatticeError as exc:
            code = exc.code.name
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        except BaseException:
            code = "INTERNAL"
            raise
        finally:
            self._metrics.requests_for(tenant, model, code).inc()
            # Without a final usage (cancelled, failed mid-stream) charge the prompt
            # and one token per delta delivered: the work the caller made us do.
            charged = prompt_tokens + delivered if final_tokens is None else final_tokens
            self._charge(admission, tenant, model, charged)

    async def _repinning_stream(
        self, decision: RouteDecision, request: Any, metadata: list[tuple[str, str]]
    ) -> AsyncGenerator[Any, None]:
        """The upstream stream; if the version we picked is already offline on the
        replica (its view is newer: FAILED_PRECONDITION before any message), the
        replica picks instead. A caller's own pin is never changed."""
        stream = self._inference.stream("GenerateStream", request, metadata)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            return
        except FailedPrecondition:
            await stream.aclose()
            if not decision.chosen_here:
                raise
            request.model = decision.name
            stream = self._inference.stream("GenerateStream", request, metadata)
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                return
        async with contextlib.aclosing(stream):
            yield first
            async for message in stream:
                yield message

    def _charge(self, admission: Admission | None, tenant: str, model: str, tokens: int) -> None:
        if tokens <= 0:
            return
        self._metrics.tokens_for(tenant, model).inc(tokens)
        if admission is not None and admission.limits.tokens:  # no task for a no-op
            self._spawn(self._quotas.record_tokens(admission, tokens))

    def _shadow(self, method: str, request: Any, metadata: list[tuple[str, str]]) -> None:
        """Copy the request to the shadow version; its answer and errors are dropped."""
        if self._shadow_slots <= 0:
            self._metrics.shadow.labels("dropped").inc()
            return
        self._shadow_slots -= 1

        async def send() -> None:
            try:
                # Shadow calls never count toward a replica's outlier ejection.
                await self._inference.unary(method, request, metadata, shadow=True)
                self._metrics.shadow.labels("sent").inc()
            except Exception as exc:
                self._metrics.shadow.labels("failed").inc()
                log.debug("shadow request to %s failed: %s", request.model, exc)
            finally:
                self._shadow_slots += 1

        self._spawn(send())

    async def list_loaded_models(self, call: Call, request: Any) -> Any:
        principal = await self.authorize(call)
        return await self._inference.unary(
            "ListLoadedModels", self._decode(request), self._forward_metadata(principal)
        )

    async def invokable_models(self, call: Call) -> list[registry_pb2.Model]:
        """The online models the caller may invoke (its scope and each model's policy)."""
        principal = await self.authorize(call)
        return [
            model
            for model in self._router.online_models()
            if tenant_allowed(principal, self._router.policy(model.name))
        ]

    # --- registry and trainer ----------------------------------------------------------

    async def forward_unary(self, upstream: str, call: Call, request: Any) -> Any:
        principal = await self.authorize(call)
        method = call.method.rsplit("/", 1)[-1]
        return await self._upstreams[upstream].unary(
            method, self._decode(request), self._forward_metadata(principal)
        )

    async def forward_client_stream(
        self, upstream: str, call: Call, requests: AsyncIterator[Any]
    ) -> Any:
        """A client-streaming call (UploadArtifact): each message parsed as it is relayed;
        one that does not parse ends the upstream call and the caller's with
        INVALID_ARGUMENT."""
        principal = await self.authorize(call)
        method = call.method.rsplit("/", 1)[-1]
        messages = (self._decode(request) async for request in requests)
        return await self._upstreams[upstream].client_stream(
            method, messages, self._forward_metadata(principal)
        )

    async def forward_stream(
        self, upstream: str, call: Call, request: Any
    ) -> AsyncGenerator[Any, None]:
        principal = await self.authorize(call)
        method = call.method.rsplit("/", 1)[-1]
        with self._stream_slots.hold(principal.tenant):
            stream = self._upstreams[upstream].stream(
                method, self._decode(request), self._forward_metadata(principal)
            )
            async with contextlib.aclosing(idle_limited(stream, self._stream_idle)) as limited:
                async for message in limited:
                    yield message

    # --- lifecycle ---------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait for background work (token accounting, shadow copies) to finish."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def close(self) -> None:
        await self.settle()
        for task in list(self._tasks):
            task.cancel()
        await self._inference.close()
        for upstream in self._upstreams.values():
            await upstream.close()
        await self._quotas.close()


def _with_model(request: Any, model: str) -> Any:
    forwarded = type(request)()
    forwarded.CopyFrom(request)
    forwarded.model = model
    return forwarded
