"""The examples in the job modules' docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["mm.index.jobs", "mm.index.job_types", "mm.index.job_state", "mm.index.job_encode",
           "mm.index.job_source", "mm.testing.hash_encoder"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
