"""The audit log: one JSON line per authorisation decision and per mutating call, in the data directory.

Lines are appended with O_APPEND in a single write each, so concurrent workers never interleave a line.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


class JsonLinesAudit:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            os.write(self._descriptor, line)

    def close(self) -> None:
        os.close(self._descriptor)
