"""KServe v2 `ModelInfer` messages built and read directly.

`tritonclient`'s `infer()` turns every input into a numpy array and an
`InferInput`, then into the protobuf, and `InferResult.as_numpy` searches and
converts the outputs again for every read: ~20 us per unary call on the
service's path for a request of a few scalars. Here the request is the
protobuf itself (raw little-endian tensor contents, the layout Triton expects)
and outputs are read straight from `raw_output_contents`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from tritonclient.grpc import service_pb2

from services.inference.backends import GenerationParams

_U32 = struct.Struct("<I")
_SCALARS = {
    "INT32": struct.Struct("<i"),
    "INT64": struct.Struct("<q"),
    "UINT64": struct.Struct("<Q"),
    "FP32": struct.Struct("<f"),
}


def bytes_tensor(values: Sequence[bytes]) -> bytes:
    """A BYTES tensor's raw contents: each element length-prefixed (uint32 LE)."""
    return b"".join(_U32.pack(len(v)) + v for v in values)


class InferRequest:
    """Builds one `ModelInferRequest`."""

    def __init__(self, model: str, version: str = "", request_id: str = "") -> None:
        self.message = service_pb2.ModelInferRequest(
            model_name=model, model_version=version, id=request_id
        )

    def add(self, name: str, datatype: str, shape: Sequence[int], raw: bytes) -> None:
        tensor = self.message.inputs.add()
        tensor.name = name
        tensor.datatype = datatype
        tensor.shape.extend(shape)
        self.message.raw_input_contents.append(raw)

    def scalar(self, name: str, datatype: str, value: float) -> None:
        self.add(name, datatype, (1,), _SCALARS[datatype].pack(value))


def generate_request(
    model: str, version: str, request_id: str, prompt: str, params: GenerationParams
) -> service_pb2.ModelInferRequest:
    """The exported generate model's request (same tensors as `generate_inputs`)."""
    request = InferRequest(model, version, request_id)
    request.add("PROMPT", "BYTES", (1,), bytes_tensor([prompt.encode("utf-8")]))
    request.scalar("MAX_NEW_TOKENS", "INT32", params.max_new_tokens)
    if not params.greedy:
        request.scalar("TEMPERATURE", "FP32", params.temperature)
        request.scalar("TOP_P", "FP32", params.top_p)
        request.scalar("TOP_K", "INT32", params.top_k)
        if params.seed is not None:
            request.scalar("SEED", "UINT64", params.seed)
    if params.stop:
        stops = [s.encode("utf-8") for s in params.stop]
        request.add("STOP", "BYTES", (len(stops),), bytes_tensor(stops))
    return request.message


class Outputs:
    """The outputs of a `ModelInferResponse` by name, first elements read raw."""

    def __init__(self, response: service_pb2.ModelInferResponse) -> None:
        raw = response.raw_output_contents
        if len(raw) != len(response.outputs):
            raise ValueError("response without raw output contents")
        self._by_name = {out.name: (out.datatype, raw[i]) for i, out in enumerate(response.outputs)}

    def text(self, name: str) -> str:
        """The first element of a BYTES output as text ("" when absent or empty)."""
        found = self._by_name.get(name)
        if found is None or len(found[1]) < 4:
            return ""
        raw = found[1]
        (size,) = _U32.unpack_from(raw)
        return raw[4 : 4 + size].decode("utf-8")

    def integer(self, name: str) -> int:
        """The first element of an integer output (0 when absent or empty)."""
        found = self._by_name.get(name)
        if found is None:
            return 0
        datatype, raw = found
        scalar = _SCALARS.get(datatype)
        if scalar is None or len(raw) < scalar.size:
            return 0
        return int(scalar.unpack_from(raw)[0])
