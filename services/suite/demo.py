"""`lattice demo`: from nothing to streamed tokens through the gateway, in one command."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from pathlib import Path

import click
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lattice import Client
from lattice.tokens import TENANT_SCOPES, mint_dev_token
from services.runtime.pki import dev_ca_file
from services.suite.local import LOCAL_TENANT, LocalSuite, SuiteConfig, dev_secret
from services.suite.starter import StarterRecipe, probe_token, train_starter, wait_until_served
from services.suite.up import report, suite_config, suite_options


def _channel(address: str, ca: Path | None) -> grpc.Channel:
    if ca is None or not ca.is_file():
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(ca.read_bytes()))


def _serving(address: str, ca: Path | None = None) -> bool:
    """Whether something healthy already answers at `address`."""
    with _channel(address, ca) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@click.command()
@suite_options
@click.option("--model", default="starter-gpt", show_default=True, help="Model to train.")
@click.option("--steps", default=900, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--processes", default=2, show_default=True, type=click.IntRange(1, 8), help="DDP processes."
)
@click.option("--prompt", default="Return the", show_default=True)
@click.option("--max-new-tokens", default=40, show_default=True, type=click.IntRange(1, 512))
@click.option("--keep-running", is_flag=True, help="Leave the suite up afterwards.")
def demo(
    model: str,
    steps: int,
    processes: int,
    prompt: str,
    max_new_tokens: int,
    keep_running: bool,
    **options,
) -> None:
    """Start the suite (or use a running one), train a small GPT-2 with DDP on the
    built-in corpus, put it online, and stream a generation through the gateway."""
    config = suite_config(options)
    recipe = StarterRecipe(model=model, steps=steps, processes=processes)
    asyncio.run(_main(config, recipe, prompt, max_new_tokens, keep_running))


async def _main(
    config: SuiteConfig,
    recipe: StarterRecipe,
    prompt: str,
    max_new_tokens: int,
    keep_running: bool,
) -> None:
    suite: LocalSuite | None = None
    gateway = config.address("gateway")
    ca = dev_ca_file(config.data_dir) if config.tls else None
    if await asyncio.to_thread(_serving, gateway, ca):
        click.echo(f"[1/6] using the suite already running at {gateway}")
    else:
        suite = LocalSuite(config, report)
        await suite.start()
        click.echo(f"[1/6] suite started in {suite.ready_after['total']:.1f}s")
        for line in suite.describe():
            click.echo(line)
    try:
        await asyncio.to_thread(_tour, config, recipe, prompt, max_new_tokens)
    finally:
        if suite is not None and not keep_running:
            await suite.stop()
        elif suite is not None:
            click.echo("suite left running; Ctrl-C to stop it")
            await asyncio.Event().wait()


def _tour(config: SuiteConfig, recipe: StarterRecipe, prompt: str, max_new_tokens: int) -> None:
    secret = dev_secret(config.data_dir.resolve())
    # The developer's own tenant, so `lattice token` can manage what the demo made.
    token = mint_dev_token(secret, tenant=LOCAL_TENANT, scopes=TENANT_SCOPES, subject="demo")
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    with Client(
        config.address("gateway"),
        token,
        metadata=[("traceparent", traceparent)],
        tls=config.tls,
        root_certificates=dev_ca_file(config.data_dir.resolve()) if config.tls else None,
    ) as client:
        click.echo(f"[2/6] minted a development token (tenant '{LOCAL_TENANT}', no admin scope)")
        click.echo("[3/6] preparing data and training")
        job = train_starter(client, recipe)
        ref = f"{job.registered_model}:{job.registered_version}"
        click.echo(f"[4/6] registered {ref} and put it online")
        with Client(
            config.address("gateway"),
            probe_token(secret),
            tls=config.tls,
            root_certificates=dev_ca_file(config.data_dir.resolve()) if config.tls else None,
        ) as probe:
            waited = wait_until_served(probe, ref)
        click.echo(f"      inference loaded it in {waited:.1f}s")
        click.echo(f"[5/6] streaming from {recipe.model} through the gateway:")
        click.echo(f"      {prompt}", nl=False)
        first = _stream(client, recipe.model, prompt, max_new_tokens)
        click.echo("[6/6] the same request again:")
        second = _stream(client, recipe.model, prompt, max_new_tokens, echo=False)
        click.echo(
            f"      cached={second.cached}, {second.seconds * 1000:.1f} ms "
            f"vs {first.seconds * 1000:.1f} ms the first time; same text: "
            f"{second.text == first.text}"
        )
    click.echo(f"trace id of these requests: {trace_id}")
    click.echo("(set OTEL_EXPORTER_OTLP_ENDPOINT before `lattice up` to see the trace)")


@dataclasses.dataclass(frozen=True)
class _Result:
    text: str
    cached: bool
    seconds: float
    version: int


def _stream(
    client: Client, model: str, prompt: str, max_new_tokens: int, echo: bool = True
) -> _Result:
    started = time.perf_counter()
    first_token = None
    pieces: list[str] = []
    cached = False
    version = 0
    # Seeded sampling reads better than greedy from a one-minute model, and is
    # still deterministic, so the second request is a cache hit.
    with client.stream(
        model, prompt, max_new_tokens=max_new_tokens, temperature=0.8, top_k=40, seed=1
    ) as deltas:
        for delta in deltas:
            if first_token is None:
                first_token = time.perf_counter() - started
            pieces.append(delta.text)
            cached = cached or delta.cached
            version = version or delta.model_version
            if echo:
                click.echo(delta.text, nl=False)
    elapsed = time.perf_counter() - started
    if echo:
        click.echo()
        click.echo(
            f"      served by {model}:{version}; first token after "
            f"{(first_token or elapsed) * 1000:.0f} ms, {elapsed:.2f}s in all"
        )
    return _Result("".join(pieces), cached, elapsed, version)
