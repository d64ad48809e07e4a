"""Triton Python-backend model: a Hugging Face encoder, mean-pooled sentence vectors.

Copied by `services.inference.triton_export` to `<repo>/<model>/<version>/model.py`.
Same artifact and the same pooling as Lattice's local transformers backend
(mean over the attention mask, optional L2 normalisation). Triton's dynamic
batcher hands `execute` several requests at once; their rows run as ONE
forward pass and the vectors are split back per request.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import torch
        from transformers import AutoModel, AutoTokenizer

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
        self.model = AutoModel.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        cfg = self.model.config
        self.max_length = getattr(cfg, "max_position_embeddings", None) or 512

    def execute(self, requests):
        torch = self.torch
        texts, normalize, sizes, responses = [], [], [], [None] * len(requests)
        for i, request in enumerate(requests):
            rows = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            rows = [r.decode("utf-8") if isinstance(r, bytes) else str(r) for r in rows]
            flag = pb_utils.get_input_tensor_by_name(request, "NORMALIZE")
            flags = [bool(f) for f in flag.as_numpy().reshape(-1)] if flag is not None else [False]
            if not rows or any(not r for r in rows):
                responses[i] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(
                        "TEXT rows must be non-empty strings", pb_utils.TritonError.INVALID_ARG
                    )
                )
                sizes.append(0)
                continue
            texts.extend(rows)
            normalize.extend(flags[j] if j < len(flags) else flags[-1] for j in range(len(rows)))
            sizes.append(len(rows))
        if texts:
            batch = self.tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vectors = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                vectors = vectors.float()
                norms = vectors.norm(dim=-1, keepdim=True).clamp(min=1e-12)
                wanted = torch.tensor(normalize, device=vectors.device).unsqueeze(-1)
                vectors = torch.where(wanted, vectors / norms, vectors)
            vectors = vectors.cpu().numpy().astype(np.float32)
            counts = batch["attention_mask"].sum(dim=1).cpu().numpy().astype(np.int32)
        start = 0
        for i, size in enumerate(sizes):
            if responses[i] is not None:
                continue
            responses[i] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("EMBEDDING", vectors[start : start + size]),
                    pb_utils.Tensor("TOKEN_COUNT", counts[start : start + size].reshape(-1, 1)),
                ]
            )
            start += size
        return responses
