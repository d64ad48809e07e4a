"""The sync Client: every method against real gRPC servers on port 0."""

from __future__ import annotations

import time

import pytest
from google.rpc import error_details_pb2

import lattice
from lattice.v1 import registry_pb2, trainer_pb2
from services.runtime import LatticeServer, ServerSettings
from tests.support.identity import GLOBEX
from tests.support.sdk_servers import REGISTRY_CALLER, REMOTE_BACKEND, TEST_TOKEN

#: A version whose artifact lives on a remote backend the registry allows.
REMOTE_URI = f"triton://{REMOTE_BACKEND}/m"


def test_generate_returns_a_typed_result(client):
    result = client.generate("tiny", "hello there", max_new_tokens=3, temperature=0.0, seed=1)
    assert isinstance(result, lattice.Generation)
    assert result.text == "w0 w1 w2"
    assert (result.model_name, result.model_version) == ("tiny", 1)
    assert result.finish_reason == "length"
    assert result.usage == lattice.Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5)
    assert result.cached is False
    assert client.generate("tiny", "cached prompt").cached is True


def test_stream_yields_deltas_then_the_finish(client):
    deltas = list(client.stream("tiny", "hi", max_new_tokens=4))
    assert all(isinstance(d, lattice.GenerationDelta) for d in deltas)
    assert "".join(d.text for d in deltas) == "w0 w1 w2 w3"
    assert deltas[0].model_name == "tiny" and deltas[0].model_version == 1
    assert [d.index for d in deltas] == [0, 1, 2, 3, 4]
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage == lattice.Usage(completion_tokens=4, total_tokens=4)
    assert deltas[0].usage is None


def test_breaking_out_of_the_stream_stops_generation_server_side(client, services):
    inference = services.inference
    for delta in client.stream("tiny", "hi", max_new_tokens=200):
        if delta.index == 2:
            break
    assert inference.stream_cancelled.wait(5), "the server never saw the cancellation"
    time.sleep(0.2)
    produced = inference.produced
    assert produced < 10, f"generation went on after the break: {produced} words"
    time.sleep(0.3)
    assert inference.produced == produced
    assert not inference.stream_finished.is_set()


def test_stream_cancel_and_context_manager(client, services):
    with client.stream("tiny", "hi", max_new_tokens=200) as stream:
        first = next(stream)
        assert first.text == "w0"
    assert services.inference.stream_cancelled.wait(5)
    assert list(stream) == []  # a cancelled stream just ends


def test_embed(client):
    result = client.embed("encoder", ["ab", "abcd"], normalize=True)
    assert isinstance(result, lattice.Embeddings)
    assert [v[0] for v in result.vectors] == [2.0, 4.0]
    assert result.model_name == "encoder" and result.usage.prompt_tokens == 2
    assert len(client.embed("encoder", "one text").vectors) == 1


def test_loaded_models(client):
    response = client.loaded_models()
    assert response.registry_revision == 3
    assert [m.model_name for m in response.models] == ["tiny"]


def test_registry_models_versions_artifacts(registry_client, tmp_path):
    client = registry_client
    model = client.create_model("sdk-gpt", "text-generation", description="d", labels={"a": "b"})
    assert model.name == "sdk-gpt" and model.labels["a"] == "b"
    assert client.get_model("sdk-gpt").description == "d"
    assert "sdk-gpt" in [m.name for m in client.list_models()]

    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text('{"n_layer": 1}')
    (source / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 20)
    uploaded = client.upload_artifact(source)
    assert uploaded.artifact_uri == f"lattice-artifact://sha256/{uploaded.digest}"
    assert uploaded.created is True
    assert client.upload_artifact(source).created is False  # same bytes, same digest

    version = client.create_version(
        "sdk-gpt",
        artifact_uri=uploaded.artifact_uri,
        artifact_digest=uploaded.digest,
        metrics={"val_loss": 2.5},
        description="first",
    )
    assert version.version == 1 and version.metrics["val_loss"] == 2.5
    second = client.register_version("sdk-gpt", source, params={"lr": "0.1"})
    assert second.version == 2 and second.artifact_digest == uploaded.digest
    assert [v.version for v in client.list_versions("sdk-gpt")] == [2, 1]
    assert client.get_version("sdk-gpt", 2).params["lr"] == "0.1"

    target = tmp_path / "downloaded"
    data = client.download_artifact(uploaded.digest, target)
    assert len(data) == uploaded.size_bytes
    assert (target / "config.json").read_text() == '{"n_layer": 1}'
    assert (target / "sub" / "weights.bin").read_bytes() == bytes(range(256)) * 20


def test_registry_aliases_deploy_history_policy(registry_client):
    client = registry_client
    client.create_model("sdk-deploy")
    for _ in range(2):
        client.create_version("sdk-deploy", artifact_uri=REMOTE_URI, artifact_digest="a" * 64)
    alias = client.set_alias("sdk-deploy", "champion", 1)
    assert (alias.alias, alias.version) == ("champion", 1)
    assert [a.alias for a in client.list_aliases("sdk-deploy")] == ["champion"]
    client.delete_alias("sdk-deploy", "champion")
    assert client.list_aliases("sdk-deploy") == []

    canary = client.deploy("sdk-deploy", {1: 90, 2: 10}, reason="canary")
    assert [(r.version, r.weight) for r in canary.routes] == [(1, 90), (2, 10)]
    client.deploy("sdk-deploy", {1: 100}, shadow=2, reason="rollback")
    deployment = client.get_deployment("sdk-deploy")
    assert [(r.version, r.weight) for r in deployment.routes] == [(1, 100)]
    assert deployment.shadow_version == 2
    assert "sdk-deploy" in [d.model_name for d in client.list_deployments()]
    history = client.history("sdk-deploy")
    assert [e.reason for e in history] == ["rollback", "canary"]
    assert {e.actor for e in history} == {REGISTRY_CALLER.subject}
    resolved = client.resolve("sdk-deploy:2")
    assert resolved.version.version == 2 and resolved.deployment.routes[0].version == 1

    policy = client.set_policy(
        "sdk-deploy", allowed_tenants=["acme"], max_new_tokens=32, min_rollout_interval=60
    )
    assert policy.max_new_tokens == 32
    fetched = client.get_policy("sdk-deploy")
    assert list(fetched.allowed_tenants) == ["acme"]
    assert fetched.min_rollout_interval.seconds == 60


def test_watch_streams_snapshot_then_live_changes(registry_client):
    client = registry_client
    client.create_model("sdk-watch")
    with client.watch() as events:
        kinds = []
        for event in events:
            kinds.append(event.type)
            if event.type == registry_pb2.WATCH_EVENT_TYPE_SYNCED:
                break
        assert registry_pb2.WATCH_EVENT_TYPE_PUT in kinds
        client.create_model("sdk-watch-live")
        live = next(events)
        assert live.model.name == "sdk-watch-live"


def test_trainer_datasets_and_jobs(client):
    dataset = client.prepare_dataset(
        "corpus",
        ["builtin:python-docstrings"],
        tokenizer="bpe",
        vocab_size=500,
        cleaning={"deduplicate": True, "minChars": 5},
    )
    assert dataset.spec.sources[0].builtin == "python-docstrings"
    assert dataset.spec.cleaning.deduplicate and dataset.spec.cleaning.min_chars == 5
    assert dataset.report.dropped["duplicate"] == 2
    assert client.get_dataset(dataset.id).name == "corpus"
    assert dataset.id in [d.id for d in client.list_datasets()]

    spec = {
        "family": "MODEL_FAMILY_GPT2_CAUSAL_LM",
        "datasetId": dataset.id,
        "hyperparameters": {"maxSteps": 5, "learningRate": 0.001},
        "registration": {"modelName": "sdk-trained"},
    }
    job = client.submit_job(spec)
    assert job.state == trainer_pb2.JOB_STATE_QUEUED
    assert client.get_job(job.id).spec.hyperparameters.max_steps == 5
    assert job.id in [j.id for j in client.list_jobs()]

    kinds = []
    for event in client.watch_job(job.id):
        kinds.append(event.WhichOneof("event"))
    assert kinds.count("metrics") == 5 and "alert" in kinds
    final = client.wait_job(job.id)
    assert final.state == trainer_pb2.JOB_STATE_SUCCEEDED
    assert final.registered_model == "sdk-trained"
    assert [j.id for j in client.list_jobs(["succeeded"])] == [job.id]

    resumed = list(client.watch_job(job.id, from_sequence=5))
    assert resumed[0].sequence == 6

    other = client.submit_job(
        trainer_pb2.JobSpec(family=trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM, dataset_id=dataset.id)
    )
    cancelled = client.cancel_job(other.id)
    assert cancelled.id == other.id


def test_errors_map_to_the_exception_tree_with_details(client, registry_client, services):
    with pytest.raises(lattice.NotFound) as not_found:
        registry_client.get_model("nope")
    assert "nope" in not_found.value.message
    assert not_found.value.code.name == "NOT_FOUND"

    with pytest.raises(lattice.InvalidArgument) as invalid:
        client.embed("encoder", [])
    assert invalid.value.field == "inputs"
    assert any(isinstance(d, error_details_pb2.BadRequest) for d in invalid.value.details)

    with pytest.raises(lattice.ResourceExhausted) as exhausted:
        client.generate("limited-model", "hi")
    assert exhausted.value.retry_after == pytest.approx(7.0)
    quota = [d for d in exhausted.value.details if isinstance(d, error_details_pb2.QuotaFailure)]
    assert quota[0].violations[0].subject == "tenant:test"

    with pytest.raises(lattice.NotFound):
        list(client.stream("missing-model", "hi"))
    with pytest.raises(lattice.FailedPrecondition):
        client.submit_job({"family": "MODEL_FAMILY_GPT2_CAUSAL_LM", "datasetId": "unknown"})
    with pytest.raises(lattice.InvalidArgument) as bad_spec:
        client.submit_job({"family": "NOT_A_FAMILY"})
    assert bad_spec.value.field == "spec"

    with (
        lattice.Client(services.address, "wrong-token") as stranger,
        pytest.raises(lattice.Unauthenticated),
    ):
        stranger.generate("tiny", "hi")


def test_another_tenant_sees_none_of_the_models(registry_client, services):
    registry_client.create_model("sdk-private")
    token = services.registry_token(GLOBEX)
    with lattice.Client(services.registry_address, token) as stranger:
        with pytest.raises(lattice.NotFound):
            stranger.get_model("sdk-private")
        assert "sdk-private" not in [m.name for m in stranger.list_models()]
        with pytest.raises(lattice.NotFound):
            stranger.deploy("sdk-private", {})
    assert registry_client.get_model("sdk-private").tenant == REGISTRY_CALLER.tenant


def test_token_and_target_come_from_the_environment(services, monkeypatch):
    monkeypatch.setenv("LATTICE_TARGET", services.address)
    monkeypatch.setenv("LATTICE_TOKEN", TEST_TOKEN)
    with lattice.Client() as client:
        assert client.target == services.address
        assert client.generate("tiny", "hi", max_new_tokens=1).text == "w0"
    monkeypatch.delenv("LATTICE_TOKEN")
    with lattice.Client() as client, pytest.raises(lattice.Unauthenticated):
        client.generate("tiny", "hi")


def test_deadline_exceeded(client):
    with pytest.raises(lattice.DeadlineExceeded):
        list(client.stream("tiny", "hi", max_new_tokens=100, timeout=0.2))


def test_unreachable_target_is_unavailable():
    with (
        lattice.Client("127.0.0.1:1", retries=2, timeout=5) as client,
        pytest.raises(lattice.Unavailable),
    ):
        client.get_model("x")


def test_extra_metadata_goes_with_every_call(services):
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with lattice.Client(services.address, TEST_TOKEN, metadata=[("traceparent", traceparent)]) as c:
        c.generate("tiny", "hi", max_new_tokens=1)
    seen = services.inference.last_metadata
    assert seen["traceparent"] == traceparent
    assert seen["authorization"] == f"Bearer {TEST_TOKEN}"
    assert seen["user-agent"].startswith("lattice-python")


def test_follow_job_resumes_after_a_trainer_restart(services):
    """Issue 21, defect 17: `lattice jobs watch` ended when the trainer restarted."""
    services.trainer.steps, services.trainer.step_delay = 30, 0.05
    with lattice.Client(services.address, TEST_TOKEN) as client:
        dataset = client.prepare_dataset("follow", ["builtin:python-docstrings"])
        job = client.submit_job(
            trainer_pb2.JobSpec(
                family=trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM, dataset_id=dataset.id
            )
        )
        sequences = []
        for event in client.follow_job(job.id, reconnect_for=20):
            sequences.append(event.sequence)
            if len(sequences) == 5:  # restart the server on the same port mid-stream
                services.server = services.run(_restarted(services.server, services))
        final = event
    assert sequences == list(range(1, len(sequences) + 1))  # none lost, none repeated
    assert final.job.state == trainer_pb2.JOB_STATE_SUCCEEDED


async def _restarted(server: LatticeServer, services) -> LatticeServer:
    """`server` stopped, and the same servicers served again on its port."""
    port = server.port
    await server.stop(0)
    replacement = LatticeServer(services.services(), ServerSettings(port=port, log_json=False))
    await replacement.start()
    return replacement
