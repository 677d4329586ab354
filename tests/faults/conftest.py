"""Shared pieces of the fault suite: tiny trained checkpoints and a CLI runner that reports the
exit status, the output and any traceback."""

from __future__ import annotations

import io
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from masksal.cli import main
from masksal.config import load_config
from masksal.training import train_classifier, train_masker

TINY = [
    "data.image_size=32", "data.n_train=64", "data.n_val=16", "data.n_test=16", "data.families=[digits]",
    "data.cache_dir=null", "classifier.kwargs={width: 8}", "classifier_train.epochs=1",
    "classifier_train.batch_size=16", "masker_train.batch_size=8", "masker_train.steps=4",
    "masker_train.log_every=1", "masker_train.checkpoint_every=2", "masker.hidden=8",
]
TINY_SET = [x for item in TINY for x in ("--set", item)]


@dataclass
class Run:
    code: int
    out: str
    err: str
    traceback: str | None

    @property
    def error_line(self) -> str:
        lines = [ln for ln in self.err.strip().splitlines() if ln.startswith("error:")]
        return lines[-1] if lines else ""

    def assert_one_line_error(self, *names: str, code: int = 2) -> None:
        """Exit ``code``, no traceback, and exactly one ``error:`` line naming every one of ``names``."""
        assert self.traceback is None, self.traceback
        assert self.code == code, (self.code, self.out, self.err)
        errors = [ln for ln in self.err.strip().splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, self.err
        assert "Traceback" not in self.err
        for n in names:
            assert n in errors[0], (n, errors[0])


def cli(*args: str) -> Run:
    """Run ``masksal ARGS`` in this process; a traceback escaping ``main`` is recorded, not raised."""
    out, err = io.StringIO(), io.StringIO()
    code, tb = 0, None
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = int(e.code or 0) if not isinstance(e.code, str) else 1
        except BaseException:  # noqa: BLE001 - what the suite looks for
            tb = traceback.format_exc()
            code = -1
    return Run(code, out.getvalue(), err.getvalue(), tb)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("faults")
    train_classifier(load_config(None, TINY), root / "classifier", progress=False)
    train_masker(load_config(None, [*TINY, f"classifier.weights={root / 'classifier'}"]), root / "masker",
                 progress=False)
    return {"root": root, "classifier": root / "classifier", "masker": root / "masker"}
