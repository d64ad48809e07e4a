"""Each command's happy path and one failure path, through a real subprocess."""

from __future__ import annotations

import json

import jwt
import pytest

from tests.support.sdk_servers import REGISTRY_CALLER, TEST_TOKEN


@pytest.mark.slow  # many subprocesses
def test_every_command_has_help(cli):
    top = cli("--help").stdout
    for name in (
        "token",
        "models",
        "versions",
        "deploy",
        "generate",
        "embed",
        "data",
        "train",
        "jobs",
        "export-triton",
        "up",
        "serve",
    ):
        assert name in top
    for args in (
        ["models", "list"],
        ["models", "create"],
        ["versions", "create"],
        ["data", "prepare"],
        ["jobs", "watch"],
        ["export-triton"],
        ["train"],
    ):
        assert "Usage:" in cli(*args, "--help").stdout
    assert "the server and ml extras" in " ".join(cli("export-triton", "--help").stdout.split())


def test_token_mints_a_jwt_with_the_dev_secret(cli):
    secret = "s3cret-s3cret-s3cret-s3cret-s3cret"
    result = cli(
        "token", "--tenant", "acme", "--scope", "inference:invoke", LATTICE_DEV_JWT_SECRET=secret
    )
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"], audience="lattice")
    assert claims["tenant"] == "acme" and claims["scope"] == "inference:invoke"
    (cli.cwd / ".lattice").mkdir()
    (cli.cwd / ".lattice" / "dev-jwt-secret").write_text("from-the-data-dir-secret-0123456789")
    exported = cli("token", "--export").stdout.strip()
    assert exported.startswith("export LATTICE_TOKEN=")


def test_token_without_a_secret_fails_in_one_line(cli):
    result = cli("token", "--data-dir", str(cli.cwd / "nowhere"), ok=False)
    assert "no dev secret" in result.stderr


def test_models_create_list_show(registry_cli):
    cli = registry_cli
    out = cli("models", "create", "cli-gpt", "--description", "demo", "--label", "team=ml")
    assert "created model cli-gpt" in out.stdout
    table = cli("models", "list").stdout
    assert table.splitlines()[0].split()[:3] == ["NAME", "TASK", "LATEST"]
    assert "cli-gpt" in table and "text-generation" in table
    listed = cli.json("models", "list")
    assert "cli-gpt" in [m["name"] for m in listed]
    shown = cli.json("models", "show", "cli-gpt")
    assert shown["model"]["labels"] == {"team": "ml"}
    assert "deployment:" in cli("models", "show", "cli-gpt").stdout


def test_models_failures(registry_cli):
    cli = registry_cli
    result = cli("models", "show", "no-such-model", ok=False)
    assert result.stderr.startswith("error: NOT_FOUND:")
    cli("models", "create", "cli-dup")
    duplicate = cli("models", "create", "cli-dup", ok=False)
    assert "ALREADY_EXISTS" in duplicate.stderr
    down = cli("models", "list", "--timeout", "2", LATTICE_TARGET="127.0.0.1:1", ok=False)
    assert down.stderr.startswith("error: UNAVAILABLE")


@pytest.mark.slow  # many subprocesses
def test_versions_upload_list_show_and_deploy(registry_cli):
    cli = registry_cli
    cli("models", "create", "cli-deploy")
    model_dir = cli.cwd / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    out = cli(
        "versions",
        "create",
        "cli-deploy",
        "--from",
        str(model_dir),
        "--metric",
        "val_loss=2.5",
        "--param",
        "lr=0.1",
    ).stdout
    assert out.startswith("registered cli-deploy:1 (sha256 ")
    second = cli.json("versions", "create", "cli-deploy", "--from", str(model_dir))
    assert second["version"] == "2"  # int64 is a string in proto JSON
    rows = cli("versions", "list", "cli-deploy").stdout.splitlines()
    assert rows[0].split()[0] == "VERSION" and rows[1].split()[0] == "2"
    shown = cli.json("versions", "show", "cli-deploy", "1")
    assert shown["metrics"] == {"val_loss": 2.5} and shown["params"] == {"lr": "0.1"}

    canary = cli("deploy", "cli-deploy", "1=90", "2=10", "--reason", "canary").stdout
    assert canary.startswith("cli-deploy: v1=90%, v2=10%")
    rollback = cli.json("deploy", "cli-deploy", "1=100", "--shadow", "2", "--reason", "rollback")
    assert rollback["routes"] == [{"version": "1", "weight": 100}]
    assert rollback["shadow_version"] == "2"
    table = cli("models", "history", "cli-deploy").stdout.splitlines()
    assert table[0].split()[:3] == ["REVISION", "TIME", "ACTOR"]
    assert "v1=90%, v2=10%" in table[1] and table[1].rstrip().endswith("rollback")
    history = cli.json("models", "history", "cli-deploy")
    assert [e["reason"] for e in history] == ["rollback", "canary"]
    assert {e["actor"] for e in history} == {REGISTRY_CALLER.subject}
    assert history[0]["to_deployment"]["routes"] == [{"version": "1", "weight": 100}]


@pytest.mark.slow  # many subprocesses
def test_versions_and_deploy_failures(registry_cli):
    cli = registry_cli
    cli("models", "create", "cli-bad")
    missing = cli(
        "versions",
        "create",
        "cli-bad",
        "--uri",
        "lattice-artifact://sha256/" + "0" * 64,
        "--digest",
        "0" * 64,
        ok=False,
    )
    assert missing.stderr.startswith("error: NOT_FOUND: artifact sha256:" + "0" * 64)
    assert "upload it first" in missing.stderr
    unknown = cli("deploy", "cli-bad", "1=100", ok=False)
    assert unknown.stderr.startswith("error: NOT_FOUND: routes[0].version: version 1 of")
    assert "'cli-bad'" in unknown.stderr
    assert "VERSION=WEIGHT" in cli("deploy", "cli-bad", "one=50", usage=True).stderr


def test_generate_plain_json_and_stream(cli):
    assert cli("generate", "tiny", "hello", "--max-new-tokens", "3").stdout == "w0 w1 w2\n"
    result = cli.json("generate", "tiny", "hello", "--max-new-tokens", "2", "--temperature", "0")
    assert result["text"] == "w0 w1" and result["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 2
    streamed = cli("generate", "tiny", "hello", "--stream", "--max-new-tokens", "4")
    assert streamed.stdout == "w0 w1 w2 w3\n"
    assert "[length]" in streamed.stderr
    lines = cli("generate", "tiny", "x", "--stream", "--json", "--max-new-tokens", "2")
    deltas = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [d["text"] for d in deltas] == ["w0", " w1", ""]
    assert deltas[-1]["finish_reason"] == "length"


def test_generate_failures(cli):
    quota = cli("generate", "limited-model", "hi", ok=False)
    assert quota.stderr.startswith("error: RESOURCE_EXHAUSTED: token quota exhausted")
    assert "NOT_FOUND" in cli("generate", "missing-x", "hi", "--stream", ok=False).stderr
    anonymous = cli("generate", "tiny", "hi", LATTICE_TOKEN="", ok=False)
    assert "UNAUTHENTICATED" in anonymous.stderr
    down = cli("generate", "tiny", "hi", "--timeout", "2", LATTICE_TARGET="127.0.0.1:1", ok=False)
    assert down.stderr.startswith("error: UNAVAILABLE")


def test_embed(cli):
    out = cli("embed", "encoder", "ab", "abcd").stdout.splitlines()
    assert out == ["'ab': [2.0000 1.0000 0.0000]", "'abcd': [4.0000 1.0000 0.0000]"]
    assert cli.json("embed", "encoder", "abc")["vectors"] == [[3.0, 1.0, 0.0]]
    assert "NOT_FOUND" in cli("embed", "missing-encoder", "x", ok=False).stderr


def test_data_prepare_list_show(cli):
    out = cli("data", "prepare", "docs", "builtin:python-docstrings", "--vocab-size", "500").stdout
    assert "dataset:" in out and "docs-0123456789ab" in out and "duplicate=2" in out
    dataset = cli.json("data", "prepare", "docs2", "corpus/*.txt", "--no-dedupe")
    assert dataset["spec"]["sources"][0]["path"] == "corpus/*.txt"
    assert dataset["spec"]["cleaning"]["deduplicate"] is False
    assert "docs-0123456789ab" in cli("data", "list").stdout
    assert cli.json("data", "show", "docs-0123456789ab")["name"] == "docs"
    assert "NOT_FOUND" in cli("data", "show", "nope", ok=False).stderr
    assert "INVALID_ARGUMENT" in cli("data", "prepare", "", "x", ok=False).stderr


def test_datasets_prepare_chinese_options(cli):
    args = [
        *("datasets", "prepare", "zh", "corpus/*.txt", "--encoding", "gb18030"),
        *("--language", "zh", "--convert", "t2s", "--segment", "--remove-stop-words"),
        *("--stop-words", "stop.txt", "--user-dictionary", "dict.txt", "--near-dedupe"),
    ]
    spec = cli.json(*args)["spec"]
    corpus, dictionary, stop_words = spec["sources"]
    assert (corpus["path"], corpus["encoding"]) == ("corpus/*.txt", "gb18030")
    assert (dictionary["path"], dictionary["role"]) == (
        "dict.txt",
        "DATA_SOURCE_ROLE_USER_DICTIONARY",
    )
    assert (stop_words["path"], stop_words["role"]) == ("stop.txt", "DATA_SOURCE_ROLE_STOP_WORDS")
    cleaning = spec["cleaning"]
    assert (cleaning["language"], cleaning["script_conversion"]) == ("zh", "t2s")
    assert cleaning["segment_words"] and cleaning["remove_stop_words"]
    assert cleaning["near_deduplicate"]
    out = cli(*args[:-1]).stdout  # the human report names the new counts
    labels = ("encodings:", "repaired:", "languages:", "converted:", "segmented:", "stop words:")
    shown = cli("data", "show", "zh-0123456789ab").stdout
    for label in (*labels, "near-duplicates:"):
        assert label in out and label in shown


def test_train_watches_to_the_end_then_jobs(cli):
    cli("data", "prepare", "tr", "builtin:python-docstrings")
    result = cli(
        "train",
        "--dataset",
        "tr-0123456789ab",
        "--model",
        "cli-trained",
        "--steps",
        "5",
        "--processes",
        "2",
        "--layers",
        "1",
    )
    assert "submitted job job-" in result.stderr
    assert "step 5/5  loss 1.0000  1,000 tok/s" in result.stderr
    assert "alert gradient_explosion at step 2" in result.stderr
    assert "succeeded; registered cli-trained:1" in result.stdout
    job_id = result.stderr.split("submitted job ")[1].split()[0]

    listed = cli.json("jobs", "list", "--state", "succeeded")
    assert job_id in [j["id"] for j in listed]
    assert job_id in cli("jobs", "list").stdout
    shown = cli("jobs", "show", job_id).stdout
    assert "state:" in shown and "succeeded" in shown and "alert gradient_explosion" in shown
    spec = cli.json("jobs", "show", job_id)["spec"]
    assert spec["distributed"]["processes_per_node"] == 2
    assert spec["hyperparameters"]["max_steps"] == 5
    watched = cli("jobs", "watch", job_id, "--from-sequence", "3")
    assert "step 1/5" not in watched.stderr and "step 5/5" in watched.stderr
    events = [
        json.loads(line) for line in cli("jobs", "watch", job_id, "--json").stdout.splitlines()
    ]
    assert events[-1]["job"]["state"] == "JOB_STATE_SUCCEEDED"
    assert cli.json("jobs", "cancel", job_id)["state"] == "JOB_STATE_SUCCEEDED"


def test_train_no_watch_and_failures(cli):
    cli("data", "prepare", "nw", "builtin:python-docstrings")
    job_id = cli("train", "--dataset", "nw-0123456789ab", "--no-watch").stdout.strip()
    assert job_id.startswith("job-")
    assert "FAILED_PRECONDITION" in cli("train", "--dataset", "unknown", ok=False).stderr
    assert "NOT_FOUND" in cli("jobs", "show", "job-none", ok=False).stderr
    assert "NOT_FOUND" in cli("jobs", "watch", "job-none", ok=False).stderr


def test_export_triton_failure_is_one_line(registry_cli):
    cli = registry_cli
    result = cli("export-triton", str(cli.cwd / "repo"), "--from-registry", "no-model:1", ok=False)
    assert result.stderr.startswith("error: NOT_FOUND")
    usage = cli("export-triton", str(cli.cwd / "repo"), usage=True)
    assert "either --source" in usage.stderr


def test_token_constant_matches_the_server(cli):
    assert cli.env["LATTICE_TOKEN"] == TEST_TOKEN


def test_lattice_debug_lets_the_traceback_through(registry_cli):
    cli = registry_cli
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "lattice.cli", "models", "show", "no-such-model"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**cli.env, "LATTICE_DEBUG": "1"},
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "NotFound" in result.stderr
