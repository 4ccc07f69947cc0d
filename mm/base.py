"""The :class:`Pipeline` base class: ``preprocess -> _forward -> postprocess``.

A pipeline declares the options it accepts when it is built (``init_options``)
and per call (``call_options``), each with its default. Anything else raises
:class:`mm.errors.UnsupportedOptionError` naming the valid ones, so no setting
is ever silently ignored.

>>> class Upper(Pipeline):
...     task = "upper"
...     call_options = {"suffix": ""}
...     def _forward(self, batch, suffix=""):
...         return [item.upper() + suffix for item in batch]
>>> p = Upper(None)
>>> p("abc", suffix="!")
'ABC!'
>>> p(["a", "b"])
['A', 'B']
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

from mm.errors import InvalidInputError, UnsupportedOptionError, check_options


class Pipeline:
    """Base of every task pipeline."""

    task: ClassVar[str] = ""
    #: options accepted by the constructor (besides model, device, dtype), with defaults
    init_options: ClassVar[dict[str, Any]] = {}
    #: options accepted by ``__call__`` / ``stream``, with defaults
    call_options: ClassVar[dict[str, Any]] = {}
    #: largest number of items run through ``_forward`` at once
    batch_size: int = 8

    def __init__(self, model: Any = None, *, device: str = "auto", dtype: str = "auto", task: str | None = None,
                 **options: Any) -> None:
        check_options(options, self.init_options, f"mm.pipeline({self.task or task!r})")
        self.model_id = model
        self.device = device
        self.dtype = dtype
        self.task = task or self.task
        self.settings = {**self.init_options, **options}
        self.last_timings: dict[str, float] = {}
        self.setup(**self.settings)

    # -- hooks a subclass overrides ------------------------------------------------------------
    def setup(self, **settings: Any) -> None:
        """Load models; called once by ``__init__`` with the merged init options."""

    def is_batch(self, inputs: Any) -> bool:
        """Whether ``inputs`` is a batch (a list of items) rather than one item."""
        return isinstance(inputs, list | tuple)

    def preprocess(self, item: Any, **options: Any) -> Any:
        """Turn one user item into model-ready input."""
        return item

    def _forward(self, batch: list[Any], **options: Any) -> list[Any]:
        """Run the model on a list of preprocessed items."""
        raise NotImplementedError

    def postprocess(self, output: Any, **options: Any) -> Any:
        """Turn one raw model output into the user-facing result."""
        return output

    def _stream(self, item: Any, **options: Any) -> Iterator[Any]:
        raise UnsupportedOptionError(f"the {self.task!r} pipeline does not stream")

    # -- public API ----------------------------------------------------------------------------
    def resolve_call_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Check per-call options and merge them over the defaults."""
        check_options(options, self.call_options, f"{type(self).__name__}()")
        merged = {**self.call_options, **{k: v for k, v in self.settings.items() if k in self.call_options}}
        merged.update(options)
        return merged

    def __call__(self, inputs: Any, **options: Any) -> Any:
        """Run one item (returns one result) or a list of items (returns a list)."""
        opts = self.resolve_call_options(options)
        batch = self.is_batch(inputs)
        items = list(inputs) if batch else [inputs]
        if batch and not items:
            raise InvalidInputError(f"the {self.task!r} pipeline got an empty list; pass at least one item")
        results: list[Any] = []
        for start in range(0, len(items), max(1, self.batch_size)):
            chunk = items[start:start + max(1, self.batch_size)]
            t0 = time.perf_counter()
            prepared = [self.preprocess(item, **opts) for item in chunk]
            t1 = time.perf_counter()
            outputs = self._forward(prepared, **opts)
            t2 = time.perf_counter()
            results.extend(self.postprocess(out, **opts) for out in outputs)
            self.last_timings = {"preprocess_s": t1 - t0, "forward_s": t2 - t1,
                                 "postprocess_s": time.perf_counter() - t2}
        return results if batch else results[0]

    def stream(self, inputs: Any, **options: Any) -> Iterator[Any]:
        """Yield output pieces for one item as they are produced."""
        opts = self.resolve_call_options(options)
        if self.is_batch(inputs):
            raise InvalidInputError(f"{type(self).__name__}.stream() takes one item, not a list")
        yield from self._stream(inputs, **opts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, model={self.model_id!r})"
