"""The training loop one rank runs under torchrun.

Everything that decides *what* happens at a step (data, masking, dropout
seeds, alerts) is a function of (seed, step, rank), so a run resumed from a
checkpoint continues exactly as an uninterrupted one would. Only rank 0
writes events and files; every rank takes part in collectives.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from lattice.v1 import trainer_pb2
from services.trainer.worker import allocator, checkpoint
from services.trainer.worker.config import WorkerConfig
from services.trainer.worker.data import DeterministicOrder, load_splits, mask_tokens
from services.trainer.worker.events import EventWriter
from services.trainer.worker.export import export
from services.trainer.worker.gpu import GpuProbe
from services.trainer.worker.model import build_model, wrap
from services.trainer.worker.monitor import (
    REDUCE_LR,
    ROLLBACK,
    STOP,
    STOP_KEEP_BEST,
    HealthMonitor,
    ParameterStats,
)
from services.trainer.worker.parallel import bert_pp, bert_tp, gpt2_pp, gpt2_tp, grads, mesh
from services.trainer.worker.schedule import lr_lambda

#: Rollbacks a job may take before a ROLLBACK alert stops it instead.
MAX_ROLLBACKS = 3


class StepFault(Protocol):
    """A fault a caller injects (tests: see tests/trainer/faulty_worker.py); the
    service's own worker runs without one."""

    def inputs(self, step: int, embeddings: torch.Tensor) -> torch.Tensor: ...


class Trainer:
    def __init__(
        self,
        config: WorkerConfig,
        rank: int,
        world: int,
        device: torch.device,
        allocator_in_effect: str = "",
        fault: StepFault | None = None,
    ) -> None:
        self.config = config
        self.allocator_in_effect = allocator_in_effect
        self.spec = config.spec
        self.hp = config.spec.hyperparameters
        self.rank, self.world, self.device = rank, world, device
        self.distributed = dist.is_initialized()
        self.fsdp = self.spec.distributed.strategy == trainer_pb2.DISTRIBUTED_STRATEGY_FSDP
        self.causal = self.spec.family == trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM
        self.events = EventWriter(config.events_path if rank == 0 else None)
        self.fault = fault
        self.current_step = 0
        self.rollbacks = 0
        self.gpu = GpuProbe.open(device)

    # -- set-up ---------------------------------------------------------------------------

    def _build(self) -> None:
        hp = self.hp
        dataset = self.config.dataset_files()
        self.train_blocks, self.val_blocks, _meta = load_splits(dataset, hp.sequence_length)
        # A sealed dataset's tokenizer is opened into this rank's scratch directory.
        scratch = self.config.job_dir / "scratch" / f"rank{self.rank}"
        self.tokenizer_dir = dataset.plain_directory("tokenizer", scratch)
        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        self.vocab_size = len(tokenizer)
        self.mask_id = tokenizer.mask_token_id
        self.special_ids = list(tokenizer.all_special_ids)
        special = {"eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}
        torch.manual_seed(hp.seed)
        model = build_model(self.spec, self.vocab_size, special, self.config.base_model_dir)
        #: Token-embedding rows set from spec.initial_word_embeddings (every rank
        #: does the same deterministic copy; a resumed checkpoint overwrites it).
        self.init_rows = 0
        if self.config.word_vectors_dir is not None:
            # Imported here, not at the top: it imports gensim (most of a second),
            # which the jobs that start from random rows never need.
            from services.trainer.worker import embedding_init

            vectors = embedding_init.load_vectors(self.config.word_vectors_dir)
            self.init_rows = embedding_init.initialise_rows(model, tokenizer, vectors)
            self.events.emit(
                "embeddings_initialised",
                rows=self.init_rows,
                vocab_size=self.vocab_size,
                words=len(vectors.index_to_key),
                source=self.spec.initial_word_embeddings,
            )
        if model.config.vocab_size < self.vocab_size:
            raise ValueError(
                f"dataset vocabulary ({self.vocab_size}) exceeds the model's "
                f"({model.config.vocab_size})"
            )
        self.model_config = model.config
        if self.fault is not None:
            model.get_input_embeddings().register_forward_hook(self._inject)
        self.layout = mesh.layout(self.spec.distributed, self.rank, self.world, self.device)
        self.tp = self.layout.tp_mesh is not None
        self.pipe: gpt2_pp.Pipeline | None = None
        if self.spec.distributed.strategy == trainer_pb2.DISTRIBUTED_STRATEGY_PIPELINE_PARALLEL:
            dist_config = self.spec.distributed
            micro = dist_config.pipeline_micro_batches
            if self.causal:
                stage: torch.nn.Module = gpt2_pp.Gpt2Stage(model, self.rank, self.world)
                loss_fn: Any = gpt2_pp.causal_lm_loss
            else:
                stage, loss_fn = (
                    bert_pp.BertStage(model, self.rank, self.world),
                    bert_pp.MaskedLmLoss(micro),
                )
            self.pipe = gpt2_pp.Pipeline(
                stage,
                self.rank,
                self.world,
                micro,
                self.device,
                dist_config.pipeline_schedule,
                loss_fn,
            )
            self.model: torch.nn.Module = self.pipe.stage_module
        elif self.tp:
            assert self.layout.tp_mesh is not None
            plan = gpt2_tp if self.causal else bert_tp
            module: torch.nn.Module = model  # PreTrainedModel.to's typing binds no self
            module.to(self.device)
            self.model = plan.prepare(model, self.layout.tp_mesh)
        else:
            self.model = wrap(model, self.spec.distributed.strategy, self.world, self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=hp.learning_rate,
            weight_decay=hp.weight_decay,
            betas=(0.9, 0.95),
        )
        self.order = DeterministicOrder(
            self.train_blocks.count,
            hp.seed,
            self.layout.dp_rank,
            self.layout.dp_size,
            hp.batch_size,
            hp.gradient_accumulation_steps,
        )
        if self.order.steps_per_epoch < 1:
            raise ValueError("dataset too small for one step per epoch")
        self.total_steps = hp.max_steps or hp.epochs * self.order.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(hp.schedule, hp.warmup_steps, self.total_steps)
        )
        self.lr_scale = 1.0
        self.monitor = HealthMonitor(self.spec.alerts, self.spec.early_stopping_patience)
        self.stats = ParameterStats(self.model, self.layout.tp_size)
        policy = self.spec.alerts
        self.keep_best = bool(self.spec.early_stopping_patience) or STOP_KEEP_BEST in (
            policy.non_finite,
            policy.gradient_explosion,
            policy.divergence,
            policy.overfitting,
        )

    def _resume(self) -> int:
        found = checkpoint.latest(self.config.checkpoint_dir)
        if found is None:
            return 0
        step, path = found
        extra = checkpoint.load(path, self.model, self.optimizer, self.rank)
        self.scheduler.load_state_dict(extra["scheduler"])
        self.monitor.restore(extra["monitor"])
        health = extra.get("health", {})
        self.lr_scale = health.get("lr_scale", 1.0)
        self.rollbacks = health.get("rollbacks", 0)
        self.events.emit("resumed", step=step)
        return step

    def _inject(self, _module, _args, output: torch.Tensor) -> torch.Tensor:
        assert self.fault is not None
        return self.fault.inputs(self.current_step, output)

    # -- one step -------------------------------------------------------------------------

    def _loss(self, inputs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.causal:
            return self.model(input_ids=inputs, labels=inputs).loss
        assert generator is not None  # masked LMs draw their masks from it
        masked, labels = mask_tokens(
            inputs.cpu(), generator, self.mask_id, self.vocab_size, self.special_ids
        )
        return self.model(input_ids=masked.to(self.device), labels=labels.to(self.device)).loss

    def _pipe_batch(
        self, inputs: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(first stage's input, last stage's target): the tokens themselves for a
        causal LM; masked tokens and their labels (drawn as in `_loss`) for BERT."""
        if self.causal:
            return inputs, inputs
        assert generator is not None  # masked LMs draw their masks from it
        masked, labels = mask_tokens(
            inputs.cpu(), generator, self.mask_id, self.vocab_size, self.special_ids
        )
        return masked.to(self.device), labels.to(self.device)

    def _sync_context(self, last: bool):
        if isinstance(self.model, DistributedDataParallel) and not last:
            return self.model.no_sync()
        if self.fsdp and isinstance(self.model, FSDPModule):
            self.model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def _grad_norm(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.hp.gradient_clip_norm
        if self.pipe is not None:
            return self.pipe.clip_and_norm(clip)
        if self.tp:
            grads.average_over_data_parallel(params, self.layout)
            return grads.clip_and_norm(params, clip, self.layout)
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        return float(norm)

    def _step(self, step: int, with_stats: bool) -> tuple[float, float]:
        hp = self.hp
        self.current_step = step + 1  # the step number events report
        # Dropout per (step, data-parallel rank): a TP group draws one mask together.
        torch.manual_seed(hp.seed + 7919 * step + self.layout.dp_rank)
        _, micro_batches = self.order.micro_batches(step)
        self.model.train()
        total = torch.zeros((), device=self.device)
        generator = (
            None
            if self.causal
            else torch.Generator().manual_seed(hp.seed * 7 + step * 131 + self.layout.dp_rank)
        )
        for index, block_ids in enumerate(micro_batches):
            inputs = self.train_blocks.take(block_ids).to(self.device, non_blocking=True)
            if self.pipe is not None:  # forward and backward, stage by stage
                total += self.pipe.train_step(*self._pipe_batch(inputs, generator))
                continue
            with self._sync_context(index == len(micro_batches) - 1):
                loss = self._loss(inputs, generator)
                (loss / len(micro_batches)).backward()
            total += loss.detach()
        grad_norm = self._grad_norm()
        mean_loss = total / len(micro_batches)
        if self.world > 1:
            dist.all_reduce(mean_loss)
            mean_loss /= self.world
        loss_value = float(mean_loss)
        if with_stats:
            self.stats.snapshot()
        if math.isfinite(grad_norm) and math.isfinite(loss_value):
            self.optimizer.step()  # a non-finite step is skipped, never applied
        self.scheduler.step()
        return loss_value, grad_norm

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        count = self.val_blocks.count
        dp_rank, dp_size = self.layout.dp_rank, self.layout.dp_size
        if count >= dp_size:
            mine = torch.arange(dp_rank, count - count % dp_size, dp_size)
        else:
            mine = torch.arange(count)
        mine = mine[: self.config.eval_batches * self.hp.batch_size]
        sums = torch.zeros(2, dtype=torch.float64)
        generator = torch.Generator().manual_seed(self.hp.seed ^ 0xE7A1)
        for start in range(0, len(mine), self.hp.batch_size):
            inputs = self.val_blocks.take(mine[start : start + self.hp.batch_size])
            if self.pipe is not None:
                if len(inputs) < self.hp.batch_size:
                    break  # micro-batches need the whole batch
                loss = self.pipe.eval_loss(*self._pipe_batch(inputs.to(self.device), generator))
            else:
                loss = self._loss(inputs.to(self.device), generator)
            sums[0] += float(loss) * len(inputs)
            sums[1] += len(inputs)
        if self.world > 1:
            dist.all_reduce(sums)
        return float(sums[0] / sums[1]) if sums[1] else math.nan

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._build()
        except Exception as error:
            # A job that cannot even be set up will fail the same way on a restart:
            # say so (any rank), so the supervisor fails it instead of retrying.
            EventWriter(self.config.events_path).emit(
                "setup_failed", rank=self.rank, message=f"{type(error).__name__}: {error}"
            )
            raise
        step = self._resume()
        hp, config = self.hp, self.config
        tokens_per_step = (
            self.layout.dp_size
            * hp.gradient_accumulation_steps
            * hp.batch_size
            * hp.sequence_length
        )
        self.events.emit(
            "started",
            step=step,
            total_steps=self.total_steps,
            world_size=self.world,
            steps_per_epoch=self.order.steps_per_epoch,
            threads=torch.get_num_threads(),
            interop_threads=torch.get_num_interop_threads(),
            allocator=self.allocator_in_effect,
        )
        outcome, last_eval = "completed", None
        # Throughput over the whole loop (monitoring and events included), from the
        # fourth step on, without evaluation and checkpoint time.
        first_step, clock_start, clock_step, excluded = step, None, step, 0.0
        while step < self.total_steps:
            started = time.perf_counter()
            if clock_start is None and step - first_step >= 3:
                clock_start, clock_step = started, step
            with_stats = config.stats_interval > 0 and (step + 1) % config.stats_interval == 0
            loss, grad_norm = self._step(step, with_stats)
            step += 1
            metrics: dict[str, object] = {  # event fields
                "step": step,
                "epoch": (step - 1) // self.order.steps_per_epoch,
                "loss": loss,
                "learning_rate": self.scheduler.get_last_lr()[0],
                "gradient_norm": grad_norm,
                "total_steps": self.total_steps,
            }
            if with_stats:
                squares = self.stats.squares()
                if self.fsdp and self.world > 1:
                    dist.all_reduce(squares)
                elif self.tp:
                    assert self.layout.tp_mesh is not None
                    dist.all_reduce(squares, group=self.layout.tp_mesh.get_group())
                histograms = None
                if config.histogram_interval and step % config.histogram_interval == 0:
                    histograms = self.stats.histograms()
                metrics["parameter_stats"] = self.stats.as_dicts(squares, histograms)
            self.optimizer.zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - started
            metrics["tokens_per_second"] = tokens_per_step / elapsed if elapsed > 0 else 0.0
            if self.gpu is not None and with_stats:
                metrics.update(self.gpu.sample())
            alerts = self.monitor.on_step(step, loss, grad_norm)
            early_stop = False
            eval_every = self.spec.eval_interval_steps
            if (eval_every and step % eval_every == 0) or step == self.total_steps:
                eval_started = time.perf_counter()
                val_loss = self.evaluate()
                last_eval = (step, val_loss)
                metrics["validation_loss"] = val_loss
                metrics["validation_perplexity"] = _perplexity(val_loss)
                eval_alerts, improved, early_stop = self.monitor.on_eval(step, val_loss)
                alerts += eval_alerts
                if improved and self.keep_best:
                    checkpoint.save_best(config.best_dir, self.model, self.rank, {"step": step})
                excluded += time.perf_counter() - eval_started
            self.events.emit("metrics", **metrics)
            rollback = False
            for alert in alerts:
                if alert.action == ROLLBACK and not alert.cleared:
                    if (
                        self.rollbacks >= MAX_ROLLBACKS
                        or checkpoint.latest(config.checkpoint_dir) is None
                    ):
                        alert.action = STOP
                        alert.message += (
                            " (no checkpoint to roll back to)"
                            if (self.rollbacks < MAX_ROLLBACKS)
                            else f" (already rolled back {MAX_ROLLBACKS} times)"
                        )
                    else:
                        rollback = True
                self.events.emit(
                    "alert",
                    kind=alert.kind,
                    step=alert.step,
                    message=alert.message,
                    action=alert.action,
                    cleared=alert.cleared,
                )
                if alert.cleared:
                    continue
                if alert.action == STOP and outcome == "completed":
                    outcome = "alert_stop"
                elif alert.action == STOP_KEEP_BEST and outcome == "completed":
                    outcome = "alert_stop_keep_best"
                elif alert.action == REDUCE_LR:
                    self._scale_lr(self.spec.alerts.lr_reduction_factor)
            if rollback and outcome == "completed":
                step = self._rollback()
                continue
            if outcome == "completed" and early_stop:
                outcome = "early_stopped"
            if outcome != "completed":
                break
            interval = self.spec.checkpoint_interval_steps
            if interval and step % interval == 0 and step < self.total_steps:
                saving_started = time.perf_counter()
                checkpoint.save(
                    config.checkpoint_dir,
                    step,
                    self.model,
                    self.optimizer,
                    {
                        "step": step,
                        "scheduler": self.scheduler.state_dict(),
                        "monitor": self.monitor.state(),
                        "health": {"lr_scale": self.lr_scale, "rollbacks": self.rollbacks},
                    },
                    self.rank,
                    config.keep_checkpoints,
                )
                self.events.emit("checkpoint", step=step)
                excluded += time.perf_counter() - saving_started
        throughput = 0.0
        if clock_start is not None and step > clock_step:
            wall = time.perf_counter() - clock_start - excluded
            throughput = (step - clock_step) * tokens_per_step / wall
        self._finish(outcome, step, last_eval, throughput)

    def _scale_lr(self, factor: float) -> None:
        """Scale the schedule's base rates, so the reduction survives its next steps
        and is saved with the scheduler in checkpoints."""
        self.lr_scale *= factor
        self.scheduler.base_lrs = [lr * factor for lr in self.scheduler.base_lrs]
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
        self.events.emit(
            "lr_reduced", factor=factor, learning_rate=self.optimizer.param_groups[0]["lr"]
        )

    def _rollback(self) -> int:
        """Reload the last checkpoint and go on from it with a lower learning rate
        (the same rate would replay the same failure: data order is deterministic)."""
        found = checkpoint.latest(self.config.checkpoint_dir)
        assert found is not None
        step, path = found
        self.optimizer.zero_grad(set_to_none=True)
        extra = checkpoint.load(path, self.model, self.optimizer, self.rank)
        self.scheduler.load_state_dict(extra["scheduler"])
        self.rollbacks += 1
        scale, self.lr_scale = self.lr_scale, 1.0
        self._scale_lr(scale * self.spec.alerts.lr_reduction_factor)
        self.events.emit("rolled_back", step=step)
        return step

    def _finish(self, outcome: str, step: int, last_eval, throughput: float) -> None:
        result = {
            "outcome": outcome,
            "step": step,
            "tokens_per_second": throughput,
            "vocab_size": self.vocab_size,
        }
        if outcome == "alert_stop":
            self._write_result(result)
            return
        if outcome in ("early_stopped", "alert_stop_keep_best"):
            if not checkpoint.best_exists(self.config.best_dir):
                self._write_result(
                    {**result, "outcome": "alert_stop", "error": "no evaluation yet to keep"}
                )
                return
            saved = checkpoint.load_best(self.config.best_dir, self.model)
            result["best_step"] = saved["step"]
            last_eval = None
        if last_eval is None or last_eval[0] != step:
            last_eval = (step, self.evaluate())
        if self.pipe is not None:
            state = self.pipe.full_state() or {}
        else:
            state = checkpoint.full_model_state(self.model)
        if self.tp and self.causal:  # BERT's gathered TP state is plain already
            state = gpt2_tp.consolidate(state, self.model_config.hidden_size, self.layout.tp_size)
        val_loss = last_eval[1]
        metrics = {"val_loss": val_loss, "perplexity": _perplexity(val_loss)}
        if self.config.word_vectors_dir is not None:
            metrics["init_embedding_rows"] = self.init_rows
        result["metrics"] = metrics
        if self.rank == 0:
            loader = AutoModelForCausalLM if self.causal else AutoModelForMaskedLM
            fresh = loader.from_config(self.model_config)
            export(fresh, state, self.tokenizer_dir, self.config.export_dir, self.causal)
            result["export_dir"] = str(self.config.export_dir)
        self._write_result(result)

    def _write_result(self, result: dict) -> None:
        if self.rank != 0:
            return
        self.config.write_result(result)
        self.events.emit("finished", **result)


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0)) if math.isfinite(loss) else math.nan


def main(argv: list[str] | None = None, fault: StepFault | None = None) -> None:
    """Run one rank; `fault` is injected by test entry points only."""
    parser = argparse.ArgumentParser(description="Lattice training worker (run by torchrun)")
    parser.add_argument("--job-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    config = WorkerConfig.load(args.job_dir)
    in_effect = allocator.apply(config.allocator)  # before the model's first allocation
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    nccl = config.spec.distributed.backend == trainer_pb2.DISTRIBUTED_BACKEND_NCCL
    device = torch.device("cuda", local_rank) if nccl else torch.device("cpu")
    if nccl:
        torch.cuda.set_device(device)
    fsdp = config.spec.distributed.strategy == trainer_pb2.DISTRIBUTED_STRATEGY_FSDP
    if world > 1 or fsdp:
        dist.init_process_group("nccl" if nccl else "gloo")
    try:
        Trainer(config, rank, world, device, in_effect, fault).run()
    except BaseException:
        if dist.is_initialized():
            dist.destroy_process_group()
        raise
    # Leave together once rank 0 has written everything. The launcher's forked
    # ranks then exit without interpreter teardown, during which gloo/DCP
    # background threads can abort() ("terminate called without an active
    # exception") and turn a finished job into a failed attempt.
    if dist.is_initialized() and world > 1:
        dist.barrier()
