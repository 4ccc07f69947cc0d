"""The examples in the job modules' docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["mm.index.jobs", "mm.index.jobs.run", "mm.index.jobs.options", "mm.index.jobs.plan",
           "mm.index.jobs.encode", "mm.index.jobs.source", "mm.index.writer", "mm.encoders.chunking",
           "mm.encoders.protocol", "mm.testing.hash_encoder"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
