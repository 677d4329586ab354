"""Every docstring example in the library runs and prints what it says (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import masksal

MODULES = sorted(m.name for m in pkgutil.walk_packages(masksal.__path__, "masksal.")
                 if not m.name.startswith("masksal.cli") and m.name != "masksal.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    torch.manual_seed(0)
    globs = {"torch": torch, **{k: getattr(module, k) for k in dir(module) if not k.startswith("__")}}
    result = doctest.testmod(module, globs=globs, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (run pytest -s to see)"
