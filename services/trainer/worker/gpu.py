"""GPU utilisation and memory through NVML (`nvidia-ml-py`, the `ml` extra).

Present only when the job runs on a CUDA device and NVML answers; otherwise
`GpuProbe.open` returns None and metrics carry no GPU fields (no error, no
retries). The sample is taken at the parameter-statistics interval, not every
step: an NVML query is a driver call (~tens of microseconds).
"""

from __future__ import annotations

import torch

try:
    import pynvml
except ImportError:  # the ml extra is not installed: no GPU figures
    pynvml = None


class GpuProbe:
    def __init__(self, handle: object) -> None:
        self.handle = handle

    @classmethod
    def open(cls, device: torch.device) -> GpuProbe | None:
        if pynvml is None or device.type != "cuda":
            return None
        try:
            pynvml.nvmlInit()
            return cls(pynvml.nvmlDeviceGetHandleByIndex(device.index or 0))
        except pynvml.NVMLError:
            return None

    def sample(self) -> dict[str, float]:
        assert pynvml is not None
        try:
            rates = pynvml.nvmlDeviceGetUtilizationRates(self.handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(self.handle)
        except pynvml.NVMLError:
            return {}
        return {"gpu_utilization": float(rates.gpu), "gpu_memory_bytes": int(memory.used)}
