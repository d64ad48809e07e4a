"""Triton repository export and Triton address resolution, without a server
(the served behaviour of the exported repository is in test_triton_backend.py)."""

from __future__ import annotations

import json

import pytest

from lattice.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from services.inference.backends import LoadSpec, Task
from services.inference.triton_backend import (
    TritonTarget,
    parse_triton_uri,
    repository_model_name,
    resolve_target,
)
from services.inference.triton_export import (
    EMBED,
    GENERATE,
    ExportOptions,
    detect_task,
    export_triton_repository,
    render_config,
)


@pytest.fixture
def fake_artifact(tmp_path):
    """An HF-shaped directory; export only copies it, so no weights are needed."""

    def make(architecture: str):
        directory = tmp_path / f"hf-{architecture}"
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps({"architectures": [architecture]}))
        (directory / "model.safetensors").write_bytes(b"\0" * 16)
        return directory

    return make


def test_generate_export_lays_out_a_decoupled_python_model(fake_artifact, tmp_path):
    target = export_triton_repository(fake_artifact("GPT2LMHeadModel"), tmp_path / "repo", "lm")
    assert target == tmp_path / "repo" / "lm"
    assert sorted(p.name for p in (target / "1").iterdir()) == ["hf", "model.py"]
    assert (target / "1" / "hf" / "model.safetensors").read_bytes() == b"\0" * 16
    assert "class TritonPythonModel" in (target / "1" / "model.py").read_text()
    config = (target / "config.pbtxt").read_text()
    assert 'name: "lm"' in config and 'backend: "python"' in config
    assert "model_transaction_policy { decoupled: true }" in config
    for tensor in ("PROMPT", "MAX_NEW_TOKENS", "TEMPERATURE", "TOP_P", "TOP_K", "SEED", "STOP"):
        assert f'name: "{tensor}"' in config
    for tensor in ("TEXT", "TOKEN_IDS", "FINISH_REASON", "PROMPT_TOKENS", "COMPLETION_TOKENS"):
        assert f'name: "{tensor}"' in config
    assert not list((tmp_path / "repo").glob(".lm.*")), "staging directory left behind"


def test_unary_and_embedding_variants(fake_artifact, tmp_path):
    unary = export_triton_repository(
        fake_artifact("GPT2LMHeadModel"), tmp_path / "r", "u", decoupled=False, device="gpu"
    )
    config = (unary / "config.pbtxt").read_text()
    assert "decoupled: false" in config and "KIND_GPU" in config
    encoder = export_triton_repository(
        fake_artifact("BertModel"), tmp_path / "r", "e", max_batch_size=8, version=3
    )
    config = (encoder / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in config and "dynamic_batching" in config
    assert "decoupled" not in config
    assert 'name: "EMBEDDING"' in config and 'name: "NORMALIZE"' in config
    assert (encoder / "3" / "model.py").read_text().count("AutoModel.from_pretrained") == 1


def test_task_detection(fake_artifact):
    assert detect_task(fake_artifact("LlamaForCausalLM")) == GENERATE
    assert detect_task(fake_artifact("BertModel")) == EMBED


def test_existing_model_needs_overwrite(fake_artifact, tmp_path):
    source = fake_artifact("GPT2LMHeadModel")
    export_triton_repository(source, tmp_path / "repo", "lm")
    with pytest.raises(AlreadyExists):
        export_triton_repository(source, tmp_path / "repo", "lm")
    export_triton_repository(source, tmp_path / "repo", "lm", overwrite=True, decoupled=False)
    assert "decoupled: false" in (tmp_path / "repo" / "lm" / "config.pbtxt").read_text()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model_name": "../escape"}, "model_name"),
        ({"model_name": ""}, "model_name"),
        ({"task": "classify"}, "task"),
        ({"device": "tpu"}, "device"),
        ({"instance_count": 0}, "instance_count"),
    ],
)
def test_bad_export_arguments_name_the_field(fake_artifact, tmp_path, kwargs, field):
    args = {"model_name": "ok", **kwargs}
    name = args.pop("model_name")
    with pytest.raises(InvalidArgument) as error:
        export_triton_repository(fake_artifact("GPT2LMHeadModel"), tmp_path / "r", name, **args)
    assert error.value.field == field


def test_missing_artifact_is_invalid_argument(tmp_path):
    with pytest.raises(InvalidArgument) as error:
        export_triton_repository(tmp_path / "nope", tmp_path / "r", "m")
    assert error.value.field == "hf_model_dir"


def test_rendered_config_records_provenance():
    env = "$$TRITON_MODEL_DIRECTORY/env.tar.gz"
    options = ExportOptions(artifact_digest="ab" * 32, dtype="float16", execution_env=env)
    config = render_config("m", GENERATE, options)
    assert f'key: "EXECUTION_ENV_PATH" value {{ string_value: "{env}" }}' in config
    assert f'key: "artifact_digest" value {{ string_value: "{"ab" * 32}" }}' in config
    assert 'key: "dtype" value { string_value: "float16" }' in config


# -- where a version is served ----------------------------------------------------


def _spec(uri: str = "", **maps) -> LoadSpec:
    return LoadSpec(model_name="chat", version=2, task=Task.GENERATE, artifact_uri=uri, **maps)


def test_triton_uri_names_address_model_and_version():
    assert parse_triton_uri("triton://gpu-0:8001/chat") == TritonTarget("gpu-0:8001", "chat")
    assert parse_triton_uri("triton://10.0.0.5:8001/chat/4") == TritonTarget(
        "10.0.0.5:8001", "chat", "4"
    )
    assert resolve_target(_spec("triton://h:1/m")).uri == "triton://h:1/m"


@pytest.mark.parametrize(
    "uri", ["triton://h:1", "triton:///m", "triton://h:1/m/x", "triton://h/a/1/2"]
)
def test_bad_triton_uri_is_invalid_argument(uri):
    with pytest.raises(InvalidArgument) as error:
        parse_triton_uri(uri)
    assert error.value.field == "artifact_uri"


def test_params_then_settings_default_address():
    spec = _spec(params={"triton_address": "t:9", "triton_model": "chat_v2"})
    assert resolve_target(spec, "ignored:1") == TritonTarget("t:9", "chat_v2")
    assert resolve_target(_spec(), "default:8001") == TritonTarget("default:8001", "chat")
    with pytest.raises(FailedPrecondition, match="no Triton address"):
        resolve_target(_spec())


def test_model_name_comes_from_an_exported_repository_artifact(fake_artifact, tmp_path):
    repo = tmp_path / "unpacked"
    export_triton_repository(fake_artifact("GPT2LMHeadModel"), repo, "chat_v7")
    assert repository_model_name(repo) == "chat_v7"  # the whole repository
    assert repository_model_name(repo / "chat_v7") == "chat_v7"  # one model directory
    spec = LoadSpec("chat", 7, Task.GENERATE, params={"triton_address": "t:1"}, model_dir=repo)
    assert resolve_target(spec) == TritonTarget("t:1", "chat_v7")
    export_triton_repository(fake_artifact("BertModel"), repo, "other")
    assert repository_model_name(repo) is None  # ambiguous: two models
