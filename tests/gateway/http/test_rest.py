"""Every registry and trainer RPC (and the inference ones) through REST once,
transcoded from the protos' google.api.http annotations, on a real suite."""

from __future__ import annotations

import hashlib
import json
import os

import httpx2 as httpx  # what the openai SDK itself uses
import pytest
from openapi_spec_validator import validate

from lattice.v1 import inference_pb2, registry_pb2, trainer_pb2
from tests.sdk.real_stack import ENCODER, MODEL

ARTIFACT_BYTES = 3 * 1024 * 1024 + 12345  # a few MB, not a multiple of any chunk size


@pytest.fixture
def api(stack, http_url):
    """REST as an administrator of tenant acme: every RPC, the admin-only ones too."""
    headers = {"authorization": f"Bearer {stack.admin_token}"}
    with httpx.Client(base_url=f"{http_url}/api/v1", headers=headers, timeout=60) as client:
        yield client


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def test_registry_rpcs_over_rest(api):
    name = "rest-model"
    model = _ok(api.post("/models", json={"name": name, "task": "MODEL_TASK_TEXT_GENERATION"}))
    assert model["model"]["name"] == name
    assert _ok(api.get(f"/models/{name}"))["model"]["task"] == "MODEL_TASK_TEXT_GENERATION"
    assert name in [m["name"] for m in _ok(api.get("/models", params={"pageSize": 100}))["models"]]

    # Upload streams the body; download streams the bytes back.
    payload = os.urandom(ARTIFACT_BYTES)
    digest = hashlib.sha256(payload).hexdigest()

    def body():
        for start in range(0, len(payload), 100_000):
            yield payload[start : start + 100_000]

    uploaded = _ok(
        api.put(
            f"/artifacts/{digest}",
            params={"header.sizeBytes": ARTIFACT_BYTES},
            content=body(),
            headers={"content-type": "application/octet-stream"},
        )
    )
    assert uploaded["digest"] == digest and int(uploaded["sizeBytes"]) == ARTIFACT_BYTES
    with api.stream("GET", f"/artifacts/{digest}") as download:
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/octet-stream"
        pieces = list(download.iter_bytes())
    assert len(pieces) > 1 and b"".join(pieces) == payload

    created = _ok(
        api.post(
            f"/models/{name}/versions",
            json={
                "artifactUri": uploaded["artifactUri"],
                "artifactDigest": digest,
                "format": "ARTIFACT_FORMAT_TRANSFORMERS",
            },
        )
    )
    assert created["version"]["version"] == "1"
    assert _ok(api.get(f"/models/{name}/versions/1"))["version"]["modelName"] == name
    assert len(_ok(api.get(f"/models/{name}/versions"))["versions"]) == 1
    _ok(api.post(f"/models/{name}/versions/1:setStatus", json={"status": "VERSION_STATUS_READY"}))

    _ok(api.put(f"/models/{name}/aliases/prod", json={"version": "1"}))
    assert [a["alias"] for a in _ok(api.get(f"/models/{name}/aliases"))["aliases"]] == ["prod"]
    resolved = _ok(api.get(f"/models/{name}@prod:resolve"))
    assert resolved["version"]["version"] == "1"
    _ok(api.delete(f"/models/{name}/aliases/prod"))

    _ok(api.put(f"/models/{name}/deployment", json={"routes": [], "reason": "rest test"}))
    _ok(api.get(f"/models/{name}/deployment"))
    assert _ok(api.get("/deployments"))["deployments"]
    assert _ok(api.get(f"/models/{name}/deployment/history"))["entries"]
    _ok(api.put(f"/models/{name}/policy", json={"policy": {"allowedTenants": ["acme"]}}))
    assert _ok(api.get(f"/models/{name}/policy"))["policy"]["allowedTenants"] == ["acme"]

    with api.stream("GET", "/registry:watch", params={"modelNames": name}) as watch:
        assert watch.headers["content-type"] == "application/x-ndjson"
        events = []
        for line in watch.iter_lines():
            events.append(json.loads(line)["result"])
            if events[-1]["type"] == "WATCH_EVENT_TYPE_SYNCED":
                break
    assert any(e.get("model", {}).get("name") == name for e in events)

    _ok(api.delete(f"/models/{name}"))
    missing = api.get(f"/models/{name}")
    assert missing.status_code == 404
    assert missing.json()["error"]["status"] == "NOT_FOUND"


def test_trainer_rpcs_over_rest(api, stack):
    # The trainer reads sources only under the tenant's own root.
    corpus = stack.root / "sources" / "acme" / "rest" / "corpus.jsonl"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    texts = [f"Document {i}: the quick brown fox number {i} jumps." for i in range(60)]
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n")
    dataset = _ok(
        api.post(
            "/datasets",
            json={
                "name": "rest-docs",
                "sources": [{"path": str(corpus)}],
                "tokenizer": {"vocabSize": 300},
                "validationFraction": 0.1,
                "seed": "1",
            },
        )
    )["dataset"]
    assert _ok(api.get(f"/datasets/{dataset['id']}"))["dataset"]["digest"] == dataset["digest"]
    assert dataset["id"] in [d["id"] for d in _ok(api.get("/datasets"))["datasets"]]

    spec = {
        "family": "MODEL_FAMILY_GPT2_CAUSAL_LM",
        "datasetId": dataset["id"],
        "architecture": {"numLayers": 1, "numHeads": 2, "hiddenSize": 32, "maxPositions": 64},
        "hyperparameters": {"maxSteps": 100000, "batchSize": 2, "sequenceLength": 32},
        "distributed": {"processesPerNode": 1},
        "registration": {"modelName": "rest-never-registered"},
    }
    job = _ok(api.post("/jobs", json={"spec": spec, "requestId": "rest-job-1"}))["job"]
    assert _ok(api.get(f"/jobs/{job['id']}"))["job"]["id"] == job["id"]
    assert job["id"] in [j["id"] for j in _ok(api.get("/jobs"))["jobs"]]
    with api.stream(
        "GET", f"/jobs/{job['id']}:watch", headers={"accept": "text/event-stream"}
    ) as w:
        assert w.headers["content-type"].startswith("text/event-stream")
        for line in w.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])["result"]
                if event.get("job", {}).get("state") == "JOB_STATE_RUNNING":
                    break
        else:
            pytest.fail("the watch ended before the job ran")
    _ok(api.post(f"/jobs/{job['id']}:cancel"))
    states = {"states": ["JOB_STATE_RUNNING", "JOB_STATE_CANCELLED", "JOB_STATE_FAILED"]}
    assert job["id"] in [j["id"] for j in _ok(api.get("/jobs", params=states))["jobs"]]
    bad = api.get("/jobs", params={"states": "JOB_STATE_SLEEPING"})
    assert bad.status_code == 400
    assert bad.json()["error"]["details"][0]["fieldViolations"][0]["field"] == "states"


def test_inference_rpcs_over_rest(api):
    generated = _ok(
        api.post(
            f"/models/{MODEL}:generate",
            json={"prompt": "Return the", "parameters": {"maxNewTokens": 4}},
        )
    )
    assert generated["modelName"] == MODEL and generated["usage"]["completionTokens"] == 4
    with api.stream(
        "POST",
        f"/models/{MODEL}:1:generateStream",
        json={"prompt": "Return the", "parameters": {"maxNewTokens": 4}},
    ) as stream:
        lines = [json.loads(line)["result"] for line in stream.iter_lines()]
    assert lines[-1]["finishReason"] == "FINISH_REASON_LENGTH"
    embedded = _ok(api.post(f"/models/{ENCODER}:embed", json={"inputs": ["one", "two"]}))
    assert len(embedded["embeddings"]) == 2
    assert "models" in _ok(api.get("/loadedModels"))


def test_rest_errors_carry_google_rpc_status(api, http_url):
    unknown = api.post("/models", json={"name": "x", "colour": "blue"})
    assert unknown.status_code == 400
    error = unknown.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "unknown field" in error["message"]
    bad = api.post(f"/models/{MODEL}:generate", json={"prompt": ""})
    assert bad.status_code == 400
    (detail,) = bad.json()["error"]["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert detail["fieldViolations"][0]["field"] == "prompt"
    refused = httpx.get(f"{http_url}/api/v1/models", headers={"authorization": "Bearer nope"})
    assert refused.status_code == 401
    assert refused.json()["error"]["status"] == "UNAUTHENTICATED"
    assert api.get("/models", params={"colour": "blue"}).status_code == 400


def test_openapi_document_is_valid_and_covers_every_rpc(http_url):
    document = httpx.get(f"{http_url}/openapi.json").json()
    validate(document)
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    assert "ModelRegistryService_UploadArtifact" in operations
    assert "TrainerService_WatchJob" in operations
    every_rpc = {
        f"{service.name}_{method.name}"
        for module in (inference_pb2, registry_pb2, trainer_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert operations == every_rpc  # a new RPC needs its google.api.http annotation
    page = httpx.get(f"{http_url}/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    script = httpx.get(f"{http_url}/docs/static/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000
