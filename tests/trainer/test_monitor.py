"""The health monitor and the data order, as plain objects (no processes)."""

from __future__ import annotations

import math

import torch

from lattice.v1 import trainer_pb2
from services.trainer.worker.data import DeterministicOrder
from services.trainer.worker.monitor import HealthMonitor, ParameterStats, layer_group
from services.trainer.worker.schedule import lr_lambda

WARN, STOP = trainer_pb2.ALERT_ACTION_WARN, trainer_pb2.ALERT_ACTION_STOP


def policy(**overrides) -> trainer_pb2.AlertPolicy:
    values = {
        "non_finite": STOP,
        "gradient_explosion": WARN,
        "explosion_factor": 10.0,
        "divergence": STOP,
        "divergence_factor": 4.0,
        "overfitting": WARN,
        "overfitting_patience": 3,
    }
    return trainer_pb2.AlertPolicy(**{**values, **overrides})


def test_non_finite_loss_or_gradient():
    monitor = HealthMonitor(policy(), 0)
    (alert,) = monitor.on_step(1, math.nan, 1.0)
    assert (alert.kind, alert.action) == (trainer_pb2.ALERT_KIND_NON_FINITE, STOP)
    assert monitor.on_step(2, 1.0, math.inf) == []  # the same episode: no flood
    (alert,) = HealthMonitor(policy(), 0).on_step(2, 1.0, math.inf)
    assert alert.kind == trainer_pb2.ALERT_KIND_NON_FINITE


def test_gradient_explosion_against_running_median_and_divergence():
    monitor = HealthMonitor(policy(), 0)
    for step in range(1, 21):
        assert monitor.on_step(step, 3.0 - step * 0.05, 1.0 + 0.01 * step) == []
    (alert,) = monitor.on_step(21, 2.0, 50.0)
    assert (
        alert.kind == trainer_pb2.ALERT_KIND_GRADIENT_EXPLOSION and "x its running" in alert.message
    )
    (alert,) = monitor.on_step(22, 9.0, 1.0)  # 9 > 4 x best (2.0)
    assert (alert.kind, alert.action) == (trainer_pb2.ALERT_KIND_DIVERGENCE, STOP)


def test_overfitting_needs_rising_validation_while_training_falls():
    monitor = HealthMonitor(policy(), early_stopping_patience=0)
    train = iter([3.0, 2.5, 2.0, 1.5, 1.0, 0.5])
    alerts_seen = []
    for step, val in enumerate([2.0, 2.1, 2.2, 2.3], start=1):
        monitor.on_step(step, next(train), 1.0)
        alerts, _, _ = monitor.on_eval(step, val)
        alerts_seen += alerts
    (alert,) = alerts_seen  # after 3 rises, once (WARN does not repeat)
    assert alert.kind == trainer_pb2.ALERT_KIND_OVERFITTING and alert.step == 4

    flat = HealthMonitor(policy(), early_stopping_patience=0)
    for step, val in enumerate([2.0, 2.1, 2.2, 2.3], start=1):
        flat.on_step(step, 1.0 + step, 1.0)  # training loss rising too: not overfitting
        alerts, _, _ = flat.on_eval(step, val)
        assert alerts == []


def test_early_stopping_and_state_round_trip():
    monitor = HealthMonitor(policy(), early_stopping_patience=2)
    assert monitor.on_eval(1, 2.0)[1:] == (True, False)
    assert monitor.on_eval(2, 2.5)[1:] == (False, False)
    restored = HealthMonitor(policy(), early_stopping_patience=2)
    restored.restore(monitor.state())
    assert restored.on_eval(3, 2.4)[1:] == (False, True)


def test_layer_groups():
    assert layer_group("transformer.h.3.attn.c_attn.weight") == "transformer.h.3"
    assert layer_group("module.transformer.wte.weight") == "transformer.wte"
    assert layer_group("bert.encoder.layer.1.output.dense.bias") == "bert.encoder.layer.1"


def test_data_order_depends_only_on_seed_epoch_rank():
    a = DeterministicOrder(100, seed=5, rank=0, world=2, batch=4, accumulation=2)
    b = DeterministicOrder(100, seed=5, rank=1, world=2, batch=4, accumulation=2)
    assert a.steps_per_epoch == 6
    epoch, (first, second) = a.micro_batches(7)
    assert epoch == 1 and len(first) == len(second) == 4
    again = DeterministicOrder(100, seed=5, rank=0, world=2, batch=4, accumulation=2)
    assert torch.equal(again.micro_batches(7)[1][0], first)  # a resumed run: same batch
    seen_a = torch.cat([t for s in range(6) for t in a.micro_batches(s)[1]])
    seen_b = torch.cat([t for s in range(6) for t in b.micro_batches(s)[1]])
    assert not set(seen_a.tolist()) & set(seen_b.tolist())  # ranks never share a block
    assert not torch.equal(a.micro_batches(0)[1][0], a.micro_batches(6)[1][0])  # reshuffled


def test_schedules_warm_up_then_decay():
    cosine = lr_lambda(trainer_pb2.LEARNING_RATE_SCHEDULE_COSINE, 10, 110)
    assert cosine(0) == 0.1 and cosine(9) == 1.0 and cosine(60) == 0.5 and cosine(110) == 0.0
    linear = lr_lambda(trainer_pb2.LEARNING_RATE_SCHEDULE_LINEAR, 0, 100)
    assert linear(50) == 0.5
    assert lr_lambda(trainer_pb2.LEARNING_RATE_SCHEDULE_CONSTANT, 5, 100)(99) == 1.0


def test_parameter_stats_match_a_plain_per_tensor_computation():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Embedding(50, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 50)
    )
    model[1].bias.requires_grad_(False)  # not a trained parameter: not counted
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    stats = ParameterStats(model)
    model(torch.tensor([1, 2, 3])).sum().backward()
    model[2].weight.grad = None  # a parameter without a gradient this step
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats.snapshot()
    optimizer.step()
    rows = {row["group"]: row for row in stats.as_dicts(stats.squares(), None)}
    assert list(rows) == ["0", "1", "2"]
    for group in rows:
        named = [(n, p) for n, p in model.named_parameters() if n.startswith(group + ".")]
        named = [(n, p) for n, p in named if p.requires_grad]
        weight = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for _, p in named))
        grad = math.sqrt(
            sum(float(p.grad.double().pow(2).sum()) for _, p in named if p.grad is not None)
        )
        update = math.sqrt(
            sum(float((p.detach() - before[n]).double().pow(2).sum()) for n, p in named)
        )
        row = rows[group]
        assert math.isclose(row["weight_norm"], weight, rel_tol=1e-6)
        assert math.isclose(row["gradient_norm"], grad, rel_tol=1e-6, abs_tol=1e-12)
        assert math.isclose(row["update_ratio"], update / weight, rel_tol=1e-5)


def test_divergence_is_one_alert_per_episode_then_cleared_and_rate_limited():
    monitor = HealthMonitor(policy(divergence=WARN, alert_cooldown_steps=200), 0)
    alerts = []
    for step in range(1, 11):
        alerts += monitor.on_step(step, 2.0, 1.0)
    for step in range(11, 111):  # 100 steps above 4x the best: one alert, not 100
        alerts += monitor.on_step(step, 9.0, 1.0)
    for step in range(111, 115):  # recovered: one cleared event after 3 healthy steps
        alerts += monitor.on_step(step, 2.0, 1.0)
    for step in range(115, 120):  # diverges again within the cooldown: quiet
        alerts += monitor.on_step(step, 9.0, 1.0)
    kinds = [(a.kind, a.step, a.cleared) for a in alerts]
    assert kinds == [
        (trainer_pb2.ALERT_KIND_DIVERGENCE, 11, False),
        (trainer_pb2.ALERT_KIND_DIVERGENCE, 113, True),
    ]
    later = monitor.on_step(300, 9.0, 1.0)  # past the cooldown: a new episode
    assert [(a.kind, a.cleared) for a in later] == [(trainer_pb2.ALERT_KIND_DIVERGENCE, False)]


def test_explosion_ceiling_from_the_first_step_and_baseline_without_the_spike():
    monitor = HealthMonitor(policy(gradient_norm_ceiling=100.0), 0)
    (alert,) = monitor.on_step(1, 7.0, 500.0)
    assert alert.kind == trainer_pb2.ALERT_KIND_GRADIENT_EXPLOSION and "ceiling" in alert.message
    fresh = HealthMonitor(policy(), 0)
    assert fresh.on_step(1, 7.0, 2.0) == [] and fresh.on_step(2, 6.5, 2.5) == []
    (alert,) = fresh.on_step(3, 6.0, 40.0)  # 16x the median of the first two steps
    assert "x its running median" in alert.message
    assert list(fresh.grad_norms) == [2.0, 2.5]  # the spike is not part of the baseline


def test_non_finite_fires_again_after_recovery_and_state_keeps_episodes():
    monitor = HealthMonitor(policy(), 0)
    assert monitor.on_step(1, math.nan, 1.0)[0].step == 1
    monitor.on_step(2, 1.0, 1.0), monitor.on_step(3, 1.0, 1.0), monitor.on_step(4, 1.0, 1.0)
    assert monitor.on_step(5, math.nan, 1.0)[0].step == 5
    restored = HealthMonitor(policy(), 0)
    restored.restore(monitor.state())
    assert restored.episodes == monitor.episodes
