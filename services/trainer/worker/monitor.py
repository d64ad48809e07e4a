"""Training health: alerts from loss/grad-norm/validation history, and parameter stats.

`HealthMonitor` is pure Python over numbers every rank sees identically
(all-reduced loss, global grad norm, all-reduced validation loss), so every
rank takes the same decision without extra communication.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from collections import deque

import torch

from lattice.v1 import trainer_pb2

WARN = trainer_pb2.ALERT_ACTION_WARN
STOP = trainer_pb2.ALERT_ACTION_STOP
STOP_KEEP_BEST = trainer_pb2.ALERT_ACTION_STOP_KEEP_BEST

#: Steps before explosion/divergence checks start (the first steps are noisy).
WARMUP_CHECKS = 10


@dataclasses.dataclass
class Alert:
    kind: int
    step: int
    message: str
    action: int


class HealthMonitor:
    def __init__(self, policy: trainer_pb2.AlertPolicy, early_stopping_patience: int) -> None:
        self.policy = policy
        self.patience = early_stopping_patience
        self.grad_norms: deque[float] = deque(maxlen=50)
        self.best_loss = math.inf
        self.steps_seen = 0
        self.window_losses: list[float] = []
        self.evals: list[tuple[float, float]] = []  # (val loss, mean train loss since last)
        self.best_val = math.inf
        self.evals_since_best = 0
        self.overfit_alerted = False

    def state(self) -> dict:
        return {
            "grad_norms": list(self.grad_norms),
            "best_loss": self.best_loss,
            "steps_seen": self.steps_seen,
            "window_losses": self.window_losses,
            "evals": self.evals,
            "best_val": self.best_val,
            "evals_since_best": self.evals_since_best,
            "overfit_alerted": self.overfit_alerted,
        }

    def restore(self, state: dict) -> None:
        self.grad_norms.extend(state["grad_norms"])
        for key in (
            "best_loss",
            "steps_seen",
            "window_losses",
            "best_val",
            "evals_since_best",
            "overfit_alerted",
        ):
            setattr(self, key, state[key])
        self.evals = [tuple(e) for e in state["evals"]]

    def on_step(self, step: int, loss: float, grad_norm: float) -> list[Alert]:
        alerts: list[Alert] = []
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            alerts.append(
                Alert(
                    trainer_pb2.ALERT_KIND_NON_FINITE,
                    step,
                    f"non-finite loss ({loss}) or gradient norm ({grad_norm})",
                    self.policy.non_finite,
                )
            )
            return alerts
        self.steps_seen += 1
        self.window_losses.append(loss)
        if self.steps_seen > WARMUP_CHECKS and len(self.grad_norms) >= WARMUP_CHECKS:
            median = statistics.median(self.grad_norms)
            factor = self.policy.explosion_factor
            if median > 0 and grad_norm > factor * median:
                alerts.append(
                    Alert(
                        trainer_pb2.ALERT_KIND_GRADIENT_EXPLOSION,
                        step,
                        f"gradient norm {grad_norm:.4g} is {grad_norm / median:.1f}x its running "
                        f"median {median:.4g} (limit {factor:g}x)",
                        self.policy.gradient_explosion,
                    )
                )
            if loss > self.policy.divergence_factor * self.best_loss:
                alerts.append(
                    Alert(
                        trainer_pb2.ALERT_KIND_DIVERGENCE,
                        step,
                        f"loss {loss:.4g} is above {self.policy.divergence_factor:g}x the best "
                        f"{self.best_loss:.4g}",
                        self.policy.divergence,
                    )
                )
        self.grad_norms.append(grad_norm)
        self.best_loss = min(self.best_loss, loss)
        return alerts

    def on_eval(self, step: int, val_loss: float) -> tuple[list[Alert], bool, bool]:
        """(alerts, improved, early stop) after an evaluation."""
        train = statistics.fmean(self.window_losses) if self.window_losses else math.nan
        self.window_losses = []
        self.evals.append((val_loss, train))
        alerts: list[Alert] = []
        if not math.isfinite(val_loss):
            alerts.append(
                Alert(
                    trainer_pb2.ALERT_KIND_NON_FINITE,
                    step,
                    f"non-finite validation loss ({val_loss})",
                    self.policy.non_finite,
                )
            )
        improved = val_loss < self.best_val
        if improved:
            self.best_val = val_loss
            self.evals_since_best = 0
        else:
            self.evals_since_best += 1
        patience = self.policy.overfitting_patience
        recent = self.evals[-(patience + 1) :]
        if len(recent) == patience + 1 and not self.overfit_alerted:
            val_rising = all(b[0] > a[0] for a, b in itertools.pairwise(recent))
            train_falling = all(b[1] < a[1] for a, b in itertools.pairwise(recent))
            if val_rising and train_falling:
                self.overfit_alerted = self.policy.overfitting == WARN
                alerts.append(
                    Alert(
                        trainer_pb2.ALERT_KIND_OVERFITTING,
                        step,
                        f"validation loss rose for {patience} evaluations in a row "
                        f"({recent[0][0]:.4g} -> {recent[-1][0]:.4g}) while training loss fell "
                        f"({recent[0][1]:.4g} -> {recent[-1][1]:.4g})",
                        self.policy.overfitting,
                    )
                )
        early_stop = bool(self.patience) and self.evals_since_best >= self.patience
        return alerts, improved, early_stop


def layer_group(name: str) -> str:
    """'transformer.h.3.attn.c_attn.weight' -> 'transformer.h.3';
    'bert.encoder.layer.1.output.dense.bias' -> 'bert.encoder.layer.1'."""
    parts = name.replace("_fsdp_wrapped_module.", "").replace("module.", "", 1).split(".")
    for index, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: index + 1])
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


class ParameterStats:
    """Per-group weight norm, grad norm and update-to-weight ratio, computed on
    the local tensors (shards under FSDP, summed across ranks by the caller's
    all-reduce), with one flat vector so it costs one collective at most.

    A few fused kernels per statistic (`torch._foreach_norm` over every tensor,
    one `index_add_` into the groups) on the parameters' own device, and one
    host transfer when the rows are built: no per-tensor temporaries or syncs."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.params: list[tuple[str, torch.nn.Parameter]] = [
            (layer_group(n), p) for n, p in model.named_parameters() if p.requires_grad
        ]
        self.groups = sorted({g for g, _ in self.params}, key=_natural)
        self.index = {g: i for i, g in enumerate(self.groups)}
        self._columns: torch.Tensor | None = None
        self._before: list[torch.Tensor] | None = None

    def _weights(self) -> list[torch.Tensor]:
        return [_local(p).detach() for _, p in self.params]

    def snapshot(self) -> None:
        """Remember the weights before the optimiser step (for the update ratio)."""
        with torch.no_grad():
            self._before = [w.clone() for w in self._weights()]

    def squares(self) -> torch.Tensor:
        """[3, groups] float64 on the parameters' device: sum of squares of weights,
        gradients and the last update."""
        with torch.no_grad():
            weights = self._weights()
            device = weights[0].device
            if self._columns is None or self._columns.device != device:
                columns = [self.index[g] for g, _ in self.params]
                self._columns = torch.tensor(columns, dtype=torch.long, device=device)
            out = torch.zeros(3, len(self.groups), dtype=torch.float64, device=device)
            out[0].index_add_(0, self._columns, _squared_norms(weights))
            with_grad = [i for i, (_, p) in enumerate(self.params) if p.grad is not None]
            if with_grad:
                grads = [_local(self.params[i][1].grad) for i in with_grad]
                rows = torch.tensor(with_grad, dtype=torch.long, device=device)
                out[1].index_add_(0, self._columns[rows], _squared_norms(grads))
            if self._before is not None:
                torch._foreach_sub_(self._before, weights)  # our own copies: before - after
                out[2].index_add_(0, self._columns, _squared_norms(self._before))
        self._before = None
        return out

    def histograms(self, bins: int = 20) -> dict[str, tuple[list[float], list[int]]]:
        """Weight histograms per group (local tensors)."""
        result = {}
        with torch.no_grad():
            for group in self.groups:
                values = torch.cat(
                    [_local(p).detach().flatten().float() for g, p in self.params if g == group]
                )
                if values.numel() == 0:
                    continue
                low, high = float(values.min()), float(values.max())
                if high <= low:
                    high = low + 1e-12
                counts = torch.histc(values, bins=bins, min=low, max=high)
                edges = torch.linspace(low, high, bins + 1)
                result[group] = (edges.tolist(), [int(c) for c in counts.tolist()])
        return result

    def as_dicts(self, squares: torch.Tensor, histograms: dict | None) -> list[dict]:
        weights, grads, updates = squares.cpu().tolist()  # the one host transfer
        rows = []
        for column, group in enumerate(self.groups):
            weight = math.sqrt(weights[column])
            update = math.sqrt(updates[column])
            row = {
                "group": group,
                "weight_norm": weight,
                "gradient_norm": math.sqrt(grads[column]),
                "update_ratio": update / weight if weight > 0 else 0.0,
            }
            if histograms and group in histograms:
                row["histogram_edges"], row["histogram_counts"] = histograms[group]
            rows.append(row)
        return rows


def _squared_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Squared L2 norm of each tensor as float64. The norms are taken in float32 (bf16
    weights too): relative error ~1e-7, enough for monitoring, and about 7x faster
    on CPU than asking `_foreach_norm` for float64."""
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float32)
    return torch.stack(norms).double().square()


def _natural(group: str) -> tuple[str, ...]:
    return tuple(p.zfill(8) if p.isdigit() else p for p in group.split("."))
