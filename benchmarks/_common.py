"""What the benchmark scripts share: writing their JSON record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save_json(path: str | Path, record: Any) -> Path:
    """Write ``record`` as indented JSON to ``path`` (parents created; paths and other objects
    JSON does not know written as strings), say so, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str))
    print(f"wrote {path}")
    return path
