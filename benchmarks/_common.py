"""What the benchmark scripts share: writing their JSON record, and the command line of the
diagnostic scripts."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
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


def run_diagnosis(description: str, diagnose: Callable[[str, str | None, str, int], dict[str, Any]], *,
                  split: str, n: int, n_help: str) -> None:
    """The command line of a diagnostic script: ``METHOD [--classifier] [--split] [--n] [--threads]
    [--out]``; runs ``diagnose(method, classifier, split, n)``, prints its record and writes it
    to ``--out`` when given."""
    import torch

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("method", help="masker:CHECKPOINT or a method spec (gradcam, ...; with --classifier)")
    ap.add_argument("--classifier", help="classifier checkpoint (default: the masker's)")
    ap.add_argument("--split", default=split)
    ap.add_argument("--n", type=int, default=n, help=n_help)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = diagnose(args.method, args.classifier, args.split, args.n)
    print(json.dumps(out, indent=1))
    if args.out:
        save_json(args.out, out)
