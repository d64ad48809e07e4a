"""Rank 0's event log: one JSON object per line, appended and flushed.

Appending a line is a single small write, so it costs microseconds per step;
the service tails the file. Lines are written whole, so a reader never sees
half an event unless the process dies mid-write (the reader ignores a
trailing partial line until it is completed).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": JSON has no literal for them
    return value


class EventWriter:
    def __init__(self, path: Path | None) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else None

    def emit(self, kind: str, /, **fields: Any) -> None:
        if self._fd is None:
            return
        fields = {k: _finite(v) for k, v in fields.items()}
        line = json.dumps({"type": kind, "time": time.time(), **fields}, separators=(",", ":"))
        os.write(self._fd, (line + "\n").encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
