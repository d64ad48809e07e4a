"""`lattice jobs plot`: one PNG with loss, validation loss, learning rate and
gradient norm, alerts marked where they fired (needs matplotlib, the ml extra)."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no global state, no window

from lattice.cli.job_series import Series

ALERT_COLOURS = {
    "non_finite": "tab:red",
    "gradient_explosion": "tab:orange",
    "divergence": "tab:purple",
    "overfitting": "tab:brown",
}


def plot(series: Series, path: Path, title: str) -> Path:
    steps = [r["step"] for r in series.rows]
    figure = Figure(figsize=(9, 8), layout="constrained")
    axes = figure.subplots(3, 1, sharex=True)
    loss_axis, lr_axis, grad_axis = axes
    loss_axis.plot(steps, [r["loss"] for r in series.rows], label="training loss", lw=1)
    evaluated = [r for r in series.rows if not math.isnan(r["validation_loss"])]
    if evaluated:
        loss_axis.plot(
            [r["step"] for r in evaluated],
            [r["validation_loss"] for r in evaluated],
            "o-",
            label="validation loss",
            lw=1.5,
        )
    loss_axis.set_ylabel("loss (nats/token)")
    lr_axis.plot(steps, [r["learning_rate"] for r in series.rows], color="tab:green", lw=1)
    lr_axis.set_ylabel("learning rate")
    grad_axis.plot(steps, [r["gradient_norm"] for r in series.rows], color="tab:gray", lw=1)
    grad_axis.set_ylabel("gradient norm")
    if any(r["gradient_norm"] > 0 for r in series.rows):
        grad_axis.set_yscale("log")
    grad_axis.set_xlabel("step")
    labelled: set[str] = set()
    for step, kind, cleared, _message in series.alerts:
        colour = ALERT_COLOURS.get(kind, "black")
        label = None if kind in labelled or cleared else f"alert: {kind.replace('_', ' ')}"
        if label:
            labelled.add(kind)
        for axis in axes:
            axis.axvline(
                step,
                color=colour,
                ls=":" if cleared else "--",
                lw=1,
                label=label if axis is loss_axis else None,
            )
    loss_axis.legend(loc="upper right", fontsize="small")
    loss_axis.set_title(title)
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.savefig(path, dpi=110)
    return path
