"""`lattice jobs metrics --csv` and `lattice jobs plot` through the real CLI."""

from __future__ import annotations

import csv
import io


def test_metrics_csv_and_plot_png(cli, tmp_path):
    cli("data", "prepare", "pl", "builtin:python-docstrings")
    result = cli("train", "--dataset", "pl-0123456789ab", "--steps", "5")
    job_id = result.stderr.split("submitted job ")[1].split()[0]

    exported = cli("jobs", "metrics", job_id, "--csv").stdout
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert set(rows[0]) >= {"loss", "validation_loss", "learning_rate", "gradient_norm"}
    assert float(rows[0]["loss"]) > 0

    target = tmp_path / "job.png"
    assert cli("jobs", "plot", job_id, "-o", str(target)).stdout.strip() == str(target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "NOT_FOUND" in cli("jobs", "plot", "job-none", ok=False).stderr
