"""The KServe v2 request built directly equals tritonclient's, and outputs read back."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import InferResult, service_pb2
from tritonclient.grpc._utils import _get_inference_request

from services.inference import kserve
from services.inference.backends import GenerationParams
from services.inference.triton_backend import generate_inputs


@pytest.mark.parametrize(
    "params",
    [
        GenerationParams(max_new_tokens=7),
        GenerationParams(max_new_tokens=3, temperature=0.7, top_p=0.9, top_k=5, seed=2**40),
        GenerationParams(max_new_tokens=3, temperature=1.0, stop=("\n", "é!")),
    ],
    ids=["greedy", "seeded", "stop"],
)
def test_the_generate_request_is_what_tritonclient_sends(params):
    prompt = "Once upon a time, ünïcode"
    ours = kserve.generate_request("lm", "2", "req-1", prompt, params)
    theirs = _get_inference_request(
        model_name="lm",
        inputs=generate_inputs(prompt, params),
        model_version="2",
        request_id="req-1",
        outputs=None,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        parameters=None,
    )
    assert ours == theirs


def test_outputs_are_read_like_infer_result():
    response = service_pb2.ModelInferResponse(model_name="lm")
    for name, datatype, value in (
        ("TEXT", "BYTES", np.array([b"h\xc3\xa9llo"], dtype=np.object_)),
        ("FINISH_REASON", "BYTES", np.array([b"eos"], dtype=np.object_)),
        ("PROMPT_TOKENS", "INT32", np.array([5], dtype=np.int32)),
        ("COMPLETION_TOKENS", "INT64", np.array([9], dtype=np.int64)),
    ):
        tensor = response.outputs.add(name=name, datatype=datatype, shape=[1])
        raw = kserve.bytes_tensor(list(value)) if datatype == "BYTES" else value.tobytes()
        response.raw_output_contents.append(raw)
        assert tensor.name == name
    outputs = kserve.Outputs(response)
    reference = InferResult(response)
    assert outputs.text("TEXT") == reference.as_numpy("TEXT")[0].decode() == "héllo"
    assert outputs.text("FINISH_REASON") == "eos"
    assert outputs.integer("PROMPT_TOKENS") == 5 and outputs.integer("COMPLETION_TOKENS") == 9
    assert outputs.text("MISSING") == "" and outputs.integer("MISSING") == 0
