"""Training health: alerts from loss/grad-norm/validation history, and parameter stats.

`HealthMonitor` is pure Python over numbers every rank sees identically
(all-reduced loss, global grad norm, all-reduced validation loss), so every
rank takes the same decision without extra communication.

Each alert kind is an *episode* (`Episode`): it fires on the first step its
condition holds, stays quiet while the condition persists, fires again at most
once per cooldown, and emits a `cleared` event after the condition has been
false for a few checks. A run that diverges for 300 steps raises one alert,
not 300.
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
REDUCE_LR = trainer_pb2.ALERT_ACTION_REDUCE_LR
ROLLBACK = trainer_pb2.ALERT_ACTION_ROLLBACK

#: Gradient norms the explosion baseline needs before the relative check runs (the
#: absolute ceiling and the non-finite check run from the first step).
MIN_BASELINE = 1
#: Healthy checks in a row that end an episode.
CLEAR_AFTER = 3
#: Running-median window for the gradient norm baseline.
BASELINE_WINDOW = 50


@dataclasses.dataclass
class Alert:
    kind: int
    step: int
    message: str
    action: int
    cleared: bool = False


@dataclasses.dataclass
class Episode:
    """Hysteresis and rate limit for one alert kind."""

    cooldown: int
    active: bool = False
    last_fired: int = -(10**9)
    healthy: int = 0

    def update(self, step: int, bad: bool) -> str | None:
        """ "fire", "clear" or None for this check."""
        if bad:
            self.healthy = 0
            if not self.active and step - self.last_fired >= self.cooldown:
                self.active, self.last_fired = True, step
                return "fire"
            return None
        if self.active:
            self.healthy += 1
            if self.healthy >= CLEAR_AFTER:
                self.active, self.healthy = False, 0
                return "clear"
        return None


KINDS: dict[int, str] = {
    trainer_pb2.ALERT_KIND_NON_FINITE: "non_finite",
    trainer_pb2.ALERT_KIND_GRADIENT_EXPLOSION: "gradient_explosion",
    trainer_pb2.ALERT_KIND_DIVERGENCE: "divergence",
    trainer_pb2.ALERT_KIND_OVERFITTING: "overfitting",
}


class HealthMonitor:
    def __init__(self, policy: trainer_pb2.AlertPolicy, early_stopping_patience: int) -> None:
        self.policy = policy
        self.patience = early_stopping_patience
        self.grad_norms: deque[float] = deque(maxlen=BASELINE_WINDOW)
        self.best_loss = math.inf
        self.steps_seen = 0
        self.window_losses: list[float] = []
        self.evals: list[tuple[float, float]] = []  # (val loss, mean train loss since last)
        self.best_val = math.inf
        self.evals_since_best = 0
        cooldown = policy.alert_cooldown_steps or 50
        # Non-finite values are never rate-limited: each one is a skipped step.
        self.episodes: dict[int, Episode] = {kind: Episode(cooldown) for kind in KINDS}
        self.episodes[trainer_pb2.ALERT_KIND_NON_FINITE].cooldown = 0

    def state(self) -> dict:
        return {
            "grad_norms": list(self.grad_norms),
            "best_loss": self.best_loss,
            "steps_seen": self.steps_seen,
            "window_losses": self.window_losses,
            "evals": self.evals,
            "best_val": self.best_val,
            "evals_since_best": self.evals_since_best,
            "episodes": {k: dataclasses.asdict(e) for k, e in self.episodes.items()},
        }

    def restore(self, state: dict) -> None:
        self.grad_norms.extend(state["grad_norms"])
        for key in ("best_loss", "steps_seen", "window_losses", "best_val", "evals_since_best"):
            setattr(self, key, state[key])
        self.evals = [tuple(e) for e in state["evals"]]
        for kind, saved in state.get("episodes", {}).items():
            self.episodes[int(kind)] = Episode(**saved)

    def _check(self, kind: int, step: int, bad: bool, message: str) -> list[Alert]:
        change = self.episodes[kind].update(step, bad)
        if change == "fire":
            return [Alert(kind, step, message, getattr(self.policy, KINDS[kind]))]
        if change == "clear":
            name = KINDS[kind].replace("_", " ")
            return [Alert(kind, step, f"{name} cleared", WARN, cleared=True)]
        return []

    def on_step(self, step: int, loss: float, grad_norm: float) -> list[Alert]:
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        alerts = self._check(
            trainer_pb2.ALERT_KIND_NON_FINITE,
            step,
            not finite,
            f"non-finite loss ({loss}) or gradient norm ({grad_norm}); the step was skipped",
        )
        if not finite:
            return alerts
        self.steps_seen += 1
        self.window_losses.append(loss)
        policy = self.policy
        ceiling = policy.gradient_norm_ceiling or 1e4
        median = statistics.median(self.grad_norms) if self.grad_norms else 0.0
        relative = len(self.grad_norms) >= MIN_BASELINE and median > 0
        exploding = grad_norm > ceiling or (
            relative and grad_norm > policy.explosion_factor * median
        )
        if grad_norm > ceiling:
            why = f"gradient norm {grad_norm:.4g} is above the ceiling {ceiling:g}"
        else:
            why = (
                f"gradient norm {grad_norm:.4g} is {grad_norm / max(median, 1e-30):.1f}x its "
                f"running median {median:.4g} (limit {policy.explosion_factor:g}x)"
            )
        alerts += self._check(trainer_pb2.ALERT_KIND_GRADIENT_EXPLOSION, step, exploding, why)
        diverging = loss > policy.divergence_factor * self.best_loss
        alerts += self._check(
            trainer_pb2.ALERT_KIND_DIVERGENCE,
            step,
            diverging,
            f"loss {loss:.4g} is above {policy.divergence_factor:g}x the best {self.best_loss:.4g}",
        )
        if not exploding:  # an explosion must not drag the baseline up with it
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
        overfitting = (
            len(recent) == patience + 1
            and all(b[0] > a[0] for a, b in itertools.pairwise(recent))
            and all(b[1] < a[1] for a, b in itertools.pairwise(recent))
        )
        # The episode lasts while validation stays above its best (it clears on
        # recovery, not on the first evaluation that merely stops rising).
        episode = self.episodes[trainer_pb2.ALERT_KIND_OVERFITTING]
        still = episode.active and val_loss > self.best_val
        alerts += self._check(
            trainer_pb2.ALERT_KIND_OVERFITTING,
            step,
            overfitting or still,
            f"validation loss rose for {patience} evaluations in a row "
            f"({recent[0][0]:.4g} -> {recent[-1][0]:.4g}) while training loss fell "
            f"({recent[0][1]:.4g} -> {recent[-1][1]:.4g})",
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


def _is_split(tensor: torch.Tensor) -> bool:
    placements = getattr(tensor, "placements", ())
    return any(p.is_shard() for p in placements)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


class ParameterStats:
    """Per-group weight norm, grad norm and update-to-weight ratio, computed on
    the local tensors (shards under FSDP, summed across ranks by the caller's
    all-reduce), with one flat vector so it costs one collective at most.

    A few fused kernels per statistic (`torch._foreach_norm` over every tensor,
    one `index_add_` into the groups) on the parameters' own device, and one
    host transfer when the rows are built: no per-tensor temporaries or syncs."""

    def __init__(self, model: torch.nn.Module, tensor_parallel: int = 1) -> None:
        self.params: list[tuple[str, torch.nn.Parameter]] = [
            (layer_group(n), p) for n, p in model.named_parameters() if p.requires_grad
        ]
        # Under tensor parallelism the caller sums over the TP group: a replicated
        # tensor (same on every rank) counts 1/tp per rank, a split one 1 per shard.
        self._factors = [1.0 if _is_split(p) else 1.0 / tensor_parallel for _, p in self.params]
        self._scaled = tensor_parallel > 1
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
            factors = torch.tensor(self._factors, dtype=torch.float64, device=device)
            out[0].index_add_(0, self._columns, self._scale(_squared_norms(weights), factors))
            with_grad = [i for i, (_, p) in enumerate(self.params) if p.grad is not None]
            if with_grad:
                grads = [_local(g) for i in with_grad if (g := self.params[i][1].grad) is not None]
                rows = torch.tensor(with_grad, dtype=torch.long, device=device)
                norms = self._scale(_squared_norms(grads), factors[rows])
                out[1].index_add_(0, self._columns[rows], norms)
            if self._before is not None:
                torch._foreach_sub_(self._before, weights)  # our own copies: before - after
                norms = self._scale(_squared_norms(self._before), factors)
                out[2].index_add_(0, self._columns, norms)
        self._before = None
        return out

    def _scale(self, squares: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        return squares * factors if self._scaled else squares

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
