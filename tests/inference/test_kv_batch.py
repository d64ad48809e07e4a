"""The in-place KV slab (services.inference.kv_batch) on a real tiny GPT-2:
rows that join, leave and outlive several relayouts decode exactly the
tokens they decode alone."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, MistralConfig

from lattice.errors import FailedPrecondition
from services.inference.kv_batch import _SLACK, KVBatch, exact_span


@pytest.fixture(scope="module")
def model(model_dirs):
    # One intra-op thread, as the decode loop runs: a pool on a busy 2-core
    # host waits for descheduled members at every op.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield GPT2LMHeadModel.from_pretrained(model_dirs["lm1"]).eval()
    torch.set_num_threads(threads)


def _alone(model, prompt: list[int], steps: int) -> list[int]:
    """Greedy tokens of one sequence on transformers' own DynamicCache."""
    tokens: list[int] = []
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt]), use_cache=True)
        for _ in range(steps):
            tokens.append(int(out.logits[0, -1].argmax()))
            out = model(input_ids=torch.tensor([tokens[-1:]]), cache=out.cache, use_cache=True)
    return tokens


class _Rows:
    """Drives a KVBatch greedily and records each row's tokens."""

    def __init__(self, model) -> None:
        self.batch = KVBatch(model, "cpu", pad_id=0)
        self.prompts: list[list[int]] = []
        self.tokens: list[list[int]] = []
        self.done: list[tuple[list[int], list[int]]] = []

    def join(self, prompts: list[list[int]]) -> None:
        logits = self.batch.prefill(prompts)
        self.prompts += prompts
        self.tokens += [[t] for t in logits.argmax(-1).tolist()]

    def step(self, count: int = 1) -> None:
        for _ in range(count):
            logits = self.batch.step([t[-1] for t in self.tokens])
            for row, token in zip(self.tokens, logits.argmax(-1).tolist(), strict=True):
                row.append(token)

    def keep(self, rows: list[int]) -> None:
        gone = set(range(len(self.tokens))) - set(rows)
        self.done += [(self.prompts[i], self.tokens[i]) for i in sorted(gone)]
        order = self.batch.keep(rows)
        assert sorted(order) == sorted(rows)
        self.prompts = [self.prompts[i] for i in order]
        self.tokens = [self.tokens[i] for i in order]


def _prompt(seed: int, length: int) -> list[int]:
    return torch.randint(1, 300, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_rows_joining_leaving_and_outliving_relayouts_decode_as_alone(model):
    rows = _Rows(model)
    rows.join([_prompt(1, 3), _prompt(2, 7)])
    rows.step(5)
    rows.join([_prompt(3, 30)])  # longer than the used width: room made on the left
    rows.step(3)
    rows.keep([1, 2])  # the first row leaves: the last moves into its slot
    rows.join([_prompt(4, 2), _prompt(5, 9), _prompt(6, 4)])
    rows.step(_SLACK + 5)  # past the slab's free columns: the region moves
    rows.keep([0, 2, 3, 4])
    rows.step(4)
    rows.keep([0, 1, 2])  # only the last row leaves: nothing moves
    rows.step(1)
    rows.keep([2, 0])
    rows.step(2)
    rows.keep([0, 1])
    everything = rows.done + list(zip(rows.prompts, rows.tokens, strict=True))
    assert len(everything) == 6
    for prompt, tokens in everything:
        assert tokens == _alone(model, prompt, len(tokens)), prompt


def test_memory_is_freed_when_the_last_row_leaves_and_reused_after(model):
    rows = _Rows(model)
    rows.join([_prompt(7, 5)])
    rows.step(3)
    assert rows.batch.kv_tokens == 1 * (5 + 3)
    rows.keep([])
    assert rows.batch.kv_tokens == 0 and rows.batch.rows == 0
    rows.join([_prompt(8, 4), _prompt(9, 6)])
    rows.step(2)
    assert rows.batch.kv_tokens == 2 * (6 + 2)
    for prompt, tokens in zip(rows.prompts, rows.tokens, strict=True):
        assert tokens == _alone(model, prompt, len(tokens))


def test_a_leaving_oldest_row_shrinks_the_width(model):
    rows = _Rows(model)
    rows.join([_prompt(10, 20)])
    rows.step(10)
    rows.join([_prompt(11, 3)])
    assert rows.batch.width == 30
    rows.keep([1])
    assert rows.batch.width == 3
    rows.step(2)
    assert rows.tokens[0] == _alone(model, rows.prompts[0], 3)


def test_the_exact_span_is_the_smallest_attention_window():
    assert exact_span(GPT2Config(n_layer=2)) is None
    assert exact_span(MistralConfig(num_hidden_layers=2, sliding_window=None)) is None
    assert exact_span(MistralConfig(num_hidden_layers=2, sliding_window=64)) == 64
    hybrid = MistralConfig(num_hidden_layers=2, sliding_window=None)
    hybrid.layer_types = ["full_attention", "linear_attention"]
    with pytest.raises(FailedPrecondition, match="linear_attention"):
        exact_span(hybrid)
