"""The live job view: a bar redrawn in place on a terminal, lines elsewhere."""

from __future__ import annotations

import io
import json

import pytest

from lattice.cli.progress import JobProgress, finish
from lattice.v1 import trainer_pb2


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def events() -> list[trainer_pb2.WatchJobResponse]:
    job = trainer_pb2.Job(id="job-1", state=trainer_pb2.JOB_STATE_RUNNING)
    done = trainer_pb2.Job(
        id="job-1",
        state=trainer_pb2.JOB_STATE_SUCCEEDED,
        registered_model="m",
        registered_version=3,
    )
    metrics = [
        trainer_pb2.TrainingMetrics(step=s, total_steps=4, loss=2.0 / s, tokens_per_second=1500.0)
        for s in (1, 2, 3, 4)
    ]
    metrics[1].validation_loss = 1.5
    alert = trainer_pb2.TrainingAlert(
        kind=trainer_pb2.ALERT_KIND_NON_FINITE,
        step=3,
        message="loss is NaN",
        action=trainer_pb2.ALERT_ACTION_WARN,
    )
    return [
        trainer_pb2.WatchJobResponse(sequence=1, job=job),
        trainer_pb2.WatchJobResponse(sequence=2, metrics=metrics[0]),
        trainer_pb2.WatchJobResponse(sequence=3, metrics=metrics[1]),
        trainer_pb2.WatchJobResponse(sequence=4, alert=alert),
        trainer_pb2.WatchJobResponse(sequence=5, metrics=metrics[2]),
        trainer_pb2.WatchJobResponse(sequence=6, log="rank 0: saved checkpoint"),
        trainer_pb2.WatchJobResponse(sequence=7, metrics=metrics[3]),
        trainer_pb2.WatchJobResponse(sequence=8, job=done),
    ]


def test_terminal_bar_redraws_in_place_with_alerts_above():
    out = Terminal()
    final = JobProgress(out=out).follow(events())
    text = out.getvalue()
    assert final.state == trainer_pb2.JOB_STATE_SUCCEEDED
    assert text.count("\r") == 4  # one redraw per metrics event
    assert "100%  step 4/4  loss 0.5000  1,500 tok/s" in text
    assert "val 1.5000" in text
    assert "\nalert non_finite at step 3: loss is NaN (warn)\n" in text
    assert "saved checkpoint" not in text  # logs only with --logs
    assert text.endswith("job job-1: succeeded\n")


def test_plain_output_is_one_line_per_event_and_logs_on_request():
    out = io.StringIO()
    JobProgress(out=out, show_logs=True).follow(events())
    lines = out.getvalue().splitlines()
    assert lines[0] == "job job-1: running"
    assert lines[1] == "step 1/4  loss 2.0000  1,500 tok/s"
    assert "rank 0: saved checkpoint" in lines
    assert "\r" not in out.getvalue()


def test_json_mode_prints_every_event_as_a_json_line(capsys):
    JobProgress(as_json=True, out=io.StringIO()).follow(events())
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8
    assert json.loads(lines[-1])["job"]["state"] == "JOB_STATE_SUCCEEDED"


def test_finish_reports_success_and_fails_on_a_failed_job(capsys):
    finish(events()[-1].job, as_json=False)
    assert "job job-1 succeeded; registered m:3" in capsys.readouterr().out
    failed = trainer_pb2.Job(id="job-2", state=trainer_pb2.JOB_STATE_FAILED, error="NaN loss")
    with pytest.raises(ValueError, match="job job-2 failed: NaN loss"):
        finish(failed, as_json=False)
