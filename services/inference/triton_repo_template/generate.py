"""Triton Python-backend model: a Hugging Face causal LM, decoded token by token.

Copied by `services.inference.triton_export` to `<repo>/<model>/<version>/model.py`.
It runs the same `save_pretrained` artifact that Lattice's local transformers
backend runs, with the same decoding rules, so greedy decoding yields the same
tokens on either path.

Decoupled transaction policy (the default export): every produced token is sent
as its own response (TEXT delta + TOKEN_IDS), then one final response carries
FINISH_REASON and the token counts with the FINAL flag. Non-decoupled: one
response per request with the whole completion. Either way a request that the
client cancels stops at the next decode step.
"""

import inspect
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

LENGTH, EOS, STOP, CANCELLED = "length", "eos", "stop_sequence", "cancelled"


class BadRequest(Exception):
    """Input the model cannot take; answered with INVALID_ARG, never retried.

    The message starts with "invalid input: " because a decoupled stream carries
    only an error string, no status code, and the client maps on that prefix.
    """


def _scalar(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    values = tensor.as_numpy().reshape(-1)
    return values[0].item() if values.size else default


def _strings(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    values = [] if tensor is None else tensor.as_numpy().reshape(-1)
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


class _SerialSender:
    """A response sender whose IPC calls never overlap with another thread's.

    Triton 24.10's Python backend crashed the whole server (SIGSEGV in
    libtriton_python.so) when several generation threads of one stub made
    stub<->server calls at once (custom-metric updates racing with
    `is_cancelled()`/`send()`; 9 concurrent streams, within a few rounds).
    One lock per model instance around every such call fixes it and costs
    microseconds next to a decode step.
    """

    __slots__ = ("_lock", "_sender")

    def __init__(self, sender, lock):
        self._sender, self._lock = sender, lock

    def send(self, *args, **kwargs):
        with self._lock:
            return self._sender.send(*args, **kwargs)

    def is_cancelled(self):
        with self._lock:
            return self._sender.is_cancelled()


def _held_back(text, stops):
    """Length of the longest tail of `text` that could still grow into a stop sequence."""
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:size]):
                held = size
                break
    return held


class TritonPythonModel:
    def initialize(self, args):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        model_dir = Path(params.get("hf_model_dir", "hf"))
        if not model_dir.is_absolute():
            model_dir = Path(args["model_repository"]) / args["model_version"] / model_dir
        if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
        else:
            self.device = torch.device("cpu")
        dtype = getattr(torch, params.get("dtype") or "float32")
        if int(params.get("torch_threads") or 0) > 0:
            torch.set_num_threads(int(params["torch_threads"]))
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        self.model.to(self.device).eval()
        # transformers 5 renamed `past_key_values` to `cache` (argument and output).
        forward_args = inspect.signature(self.model.forward).parameters
        self.cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        # Only the last position's logits are needed (and the local backend asks the same).
        self.step_kwargs = {"logits_to_keep": 1} if "logits_to_keep" in forward_args else {}
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        cfg = self.model.config
        self.context_length = getattr(cfg, "n_positions", None) or getattr(
            cfg, "max_position_embeddings", 2048
        )
        self.default_max_new_tokens = int(params.get("default_max_new_tokens") or 64)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.pool = ThreadPoolExecutor(
            max_workers=int(params.get("max_concurrency") or 4),
            thread_name_prefix="generate",
        )
        self.ipc = threading.Lock()  # see _SerialSender
        labels = {"model": args["model_name"], "version": args["model_version"]}
        # The families must outlive their metrics, so both are kept on self.
        self.tokens_family = pb_utils.MetricFamily(
            name="lattice_triton_generated_tokens_total",
            description="Tokens produced by the Lattice generate model (cancelled ones included)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.cancelled_family = pb_utils.MetricFamily(
            name="lattice_triton_cancelled_generations_total",
            description="Generations stopped early because the client cancelled",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.tokens_metric = self.tokens_family.Metric(labels=labels)
        self.cancelled_metric = self.cancelled_family.Metric(labels=labels)

    # -- Triton entry points -------------------------------------------------

    def execute(self, requests):
        if self.decoupled:
            for request in requests:  # one thread per stream; execute returns at once
                self.pool.submit(self._stream_one, request)
            return None
        # Unary: answer in this thread. A hand-off to the pool costs milliseconds
        # here; Triton scales unary models with instance_count instead.
        return [self._unary_one(request) for request in requests]

    def finalize(self):
        self.pool.shutdown(wait=True, cancel_futures=False)  # in-flight streams finish

    # -- one request -----------------------------------------------------------

    def _unary_one(self, request):
        try:
            steps = list(self._decode(request, request.is_cancelled))
            text = "".join(step[0] for step in steps)
            ids = [token for step in steps for token in step[1]]
            _, _, finish, prompt_tokens, completion = steps[-1]
            return self._response(text, ids, finish, prompt_tokens, completion)
        except BadRequest as exc:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(
                    f"invalid input: {exc}", pb_utils.TritonError.INVALID_ARG
                )
            )
        except Exception as exc:  # reported to the client as an internal model error
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"generate failed: {exc}"))

    def _stream_one(self, request):
        sender = _SerialSender(request.get_response_sender(), self.ipc)
        try:
            for delta, token_ids, finish, prompt_tokens, completion in self._decode(
                request, sender.is_cancelled
            ):
                if finish is None:
                    sender.send(self._response(delta, token_ids, "", prompt_tokens, completion))
                elif finish == CANCELLED:
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                else:
                    sender.send(
                        self._response(delta, token_ids, finish, prompt_tokens, completion),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                    )
        except BadRequest as exc:
            sender.send(
                pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(
                        f"invalid input: {exc}", pb_utils.TritonError.INVALID_ARG
                    )
                ),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )
        except Exception as exc:
            sender.send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError(f"generate failed: {exc}")),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )

    @staticmethod
    def _response(text, token_ids, finish, prompt_tokens, completion_tokens):
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("TEXT", np.array([text.encode("utf-8")], dtype=np.object_)),
                pb_utils.Tensor("TOKEN_IDS", np.array(token_ids, dtype=np.int64)),
                pb_utils.Tensor(
                    "FINISH_REASON", np.array([(finish or "").encode()], dtype=np.object_)
                ),
                pb_utils.Tensor("PROMPT_TOKENS", np.array([prompt_tokens], dtype=np.int32)),
                pb_utils.Tensor("COMPLETION_TOKENS", np.array([completion_tokens], dtype=np.int32)),
            ]
        )

    # -- decoding --------------------------------------------------------------

    def _parse(self, request):
        prompts = _strings(request, "PROMPT")
        if len(prompts) != 1 or not prompts[0]:
            raise BadRequest("PROMPT must be one non-empty string")
        max_new = int(_scalar(request, "MAX_NEW_TOKENS", self.default_max_new_tokens))
        temperature = float(_scalar(request, "TEMPERATURE", 0.0))
        top_p = float(_scalar(request, "TOP_P", 1.0))
        top_k = int(_scalar(request, "TOP_K", 0))
        seed = _scalar(request, "SEED", None)
        stops = tuple(s for s in _strings(request, "STOP") if s)
        if max_new < 1:
            raise BadRequest(f"MAX_NEW_TOKENS must be >= 1, got {max_new}")
        if not 0.0 <= temperature <= 2.0:
            raise BadRequest(f"TEMPERATURE must be in [0, 2], got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise BadRequest(f"TOP_P must be in (0, 1], got {top_p}")
        if top_k < 0:
            raise BadRequest(f"TOP_K must be >= 0, got {top_k}")
        return prompts[0], max_new, temperature, top_p, top_k, seed, stops

    def _pick(self, logits, temperature, top_p, top_k, generator):
        """Next token from the last position's logits ([vocab]); the same rule,
        operation for operation, as Lattice's local backend, so a seeded sample
        is the same token on both paths."""
        torch = self.torch
        if temperature == 0.0:
            return int(torch.argmax(logits))
        logits = logits.float() / temperature
        if top_k and top_k < logits.shape[-1]:
            kth = torch.topk(logits, top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            sorted_probs = torch.softmax(sorted_logits, dim=-1)
            # Drop every token after the nucleus already holds top_p of the mass.
            drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
            drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=generator))

    def _decode(self, request, cancelled):
        """Yield (text delta, token ids, finish or None, prompt tokens, completion tokens)."""
        torch = self.torch
        prompt, max_new, temperature, top_p, top_k, seed, stops = self._parse(request)
        input_ids = self.tokenizer(prompt, return_tensors="pt").input_ids.to(self.device)
        prompt_tokens = int(input_ids.shape[-1])
        if prompt_tokens == 0:
            raise BadRequest("PROMPT encodes to zero tokens")
        if prompt_tokens >= self.context_length:
            raise BadRequest(
                f"PROMPT is {prompt_tokens} tokens; the model's context is {self.context_length}"
            )
        generator = None
        if seed is not None and temperature != 0.0:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        produced, sent, finish, past = [], "", LENGTH, None
        step_input = input_ids
        budget = min(max_new, self.context_length - prompt_tokens)
        try:
            with torch.inference_mode():
                for _ in range(budget):
                    if cancelled():
                        finish = CANCELLED
                        break
                    cache = {self.cache_arg: past} if past is not None else {}
                    out = self.model(
                        input_ids=step_input, use_cache=True, **cache, **self.step_kwargs
                    )
                    past = getattr(out, self.cache_arg)
                    token = self._pick(out.logits[0, -1, :], temperature, top_p, top_k, generator)
                    if token in self.eos_ids:
                        finish = EOS
                        break
                    produced.append(token)
                    text = self.tokenizer.decode(produced, skip_special_tokens=True)
                    cut = min((text.find(s) for s in stops if s in text), default=-1)
                    if cut >= 0:
                        finish = STOP
                        text = text[:cut]
                        yield text[len(sent) :], [token], None, prompt_tokens, len(produced)
                        sent = text
                        break
                    visible = len(text) - _held_back(text, stops)
                    if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait
                        visible = min(visible, len(sent))
                    delta = text[len(sent) : visible] if visible > len(sent) else ""
                    sent += delta
                    yield delta, [token], None, prompt_tokens, len(produced)
                    step_input = torch.tensor([[token]], device=self.device)
            if finish != CANCELLED and finish != STOP and produced:
                text = self.tokenizer.decode(produced, skip_special_tokens=True)
                tail = text[len(sent) :]
            else:
                tail = ""
            yield tail, [], finish, prompt_tokens, len(produced)
        finally:
            with self.ipc:
                if produced:
                    self.tokens_metric.increment(len(produced))
                if finish == CANCELLED:
                    self.cancelled_metric.increment(1)
