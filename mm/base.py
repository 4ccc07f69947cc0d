"""The :class:`Pipeline` base class: ``preprocess -> _forward -> postprocess``.

A pipeline declares the options it accepts when it is built (``init_options``) and per call
(``call_options``, :class:`mm.options.Option` objects: default, stage, value check). Anything
else raises :class:`mm.errors.UnsupportedOptionError` naming the valid ones, so no setting is
ever silently ignored. A call option given to the constructor becomes that pipeline's default.
Each stage receives only the options declared for it.

>>> from mm.options import Option, text
>>> class Upper(Pipeline):
...     task = "upper"
...     call_options = (Option("suffix", "", "postprocess", text),)
...     def _forward(self, batch):
...         return [item.upper() for item in batch]
...     def postprocess(self, output, suffix=""):
...         return output + suffix
>>> p = Upper(None)
>>> p("abc", suffix="!")
'ABC!'
>>> p(["a", "b"])
['A', 'B']
>>> Upper(None, suffix="?")("x")
'X?'
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

from mm import options as opts
from mm.errors import InvalidInputError, UnsupportedOptionError, check_options


class Pipeline:
    """Base of every task pipeline."""

    task: ClassVar[str] = ""
    #: options accepted by the constructor (besides model, device, dtype), with defaults
    init_options: ClassVar[dict[str, Any]] = {}
    #: options accepted by ``__call__`` / ``stream``: :class:`mm.options.Option` objects (or ``{name: default}``)
    call_options: ClassVar[Any] = ()
    #: largest number of items run through ``_forward`` at once
    batch_size: int = 8
    #: torch threads used during a call (restored afterwards); None leaves torch's setting alone
    threads: int | None = None

    def __init__(self, model: Any = None, *, device: str = "auto", dtype: str = "auto", task: str | None = None,
                 **options: Any) -> None:
        declared = self.declared_options()
        where = f"mm.pipeline({self.task or task!r})"
        check_options(options, [*self.init_options, *declared], where)
        self.model_id = model
        self.device = device
        self.dtype = dtype
        self.task = task or self.task
        init = {k: v for k, v in options.items() if k in self.init_options}
        defaults = {k: v for k, v in options.items() if k not in self.init_options}
        #: per-call defaults set at construction (call options given to the constructor), checked now
        self.defaults = {k: declared[k].validate(v) for k, v in defaults.items()}
        if "threads" in self.init_options:
            self.threads = opts.optional(opts.positive_int)(init.get("threads"), "threads")
        self.settings = {**self.init_options, **init}
        self.last_timings: dict[str, float] = {}
        self.setup(**self.settings)

    # -- hooks a subclass overrides ------------------------------------------------------------
    def setup(self, **settings: Any) -> None:
        """Load models; called once by ``__init__`` with the merged init options."""

    def is_batch(self, inputs: Any) -> bool:
        """Whether ``inputs`` is a batch (a list of items) rather than one item."""
        return isinstance(inputs, list | tuple)

    def preprocess(self, item: Any, **options: Any) -> Any:
        """Turn one user item into model-ready input (gets the ``preprocess`` options)."""
        return item

    def _forward(self, batch: list[Any], **options: Any) -> list[Any]:
        """Run the model on a list of preprocessed items (gets the ``forward`` options)."""
        raise NotImplementedError

    def postprocess(self, output: Any, **options: Any) -> Any:
        """Turn one raw model output into the user-facing result (gets the ``postprocess`` options)."""
        return output

    def check_call(self, options: dict[str, Any]) -> None:
        """Checks that span several options (e.g. sampling knobs need ``do_sample``); raise to refuse."""

    def _stream(self, item: Any, **options: Any) -> Iterator[Any]:
        raise UnsupportedOptionError(f"the {self.task!r} pipeline does not stream")

    # -- options -------------------------------------------------------------------------------
    @classmethod
    def declared_options(cls) -> dict[str, opts.Option]:
        """``{name: Option}`` of the call options."""
        return opts.as_options(cls.call_options)

    def resolve_call_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Check per-call options and merge them over the pipeline's and the declared defaults."""
        merged = opts.resolve(options, self.declared_options(), f"{type(self).__name__}()", self.defaults)
        self.check_call(merged)
        return merged

    def stage_options(self, options: dict[str, Any], stage: str) -> dict[str, Any]:
        """The subset of resolved ``options`` that belongs to ``stage``."""
        return opts.by_stage(options, self.declared_options())[stage]

    # -- public API ----------------------------------------------------------------------------
    def __call__(self, inputs: Any, **options: Any) -> Any:
        """Run one item (returns one result) or a list of items (returns a list)."""
        from mm.runtime import scoped_threads

        resolved = self.resolve_call_options(options)
        staged = opts.by_stage(resolved, self.declared_options())
        batch = self.is_batch(inputs)
        items = list(inputs) if batch else [inputs]
        if batch and not items:
            raise InvalidInputError(f"the {self.task!r} pipeline got an empty list; pass at least one item")
        results: list[Any] = []
        step = max(1, self.batch_size)
        with scoped_threads(self.threads):
            for start in range(0, len(items), step):
                chunk = items[start:start + step]
                t0 = time.perf_counter()
                prepared = [self.preprocess(item, **staged["preprocess"]) for item in chunk]
                t1 = time.perf_counter()
                outputs = self._forward(prepared, **staged["forward"])
                t2 = time.perf_counter()
                results.extend(self.postprocess(out, **staged["postprocess"]) for out in outputs)
                self.last_timings = {"preprocess_s": t1 - t0, "forward_s": t2 - t1,
                                     "postprocess_s": time.perf_counter() - t2}
        return results if batch else results[0]

    def stream(self, inputs: Any, **options: Any) -> Iterator[Any]:
        """Yield output pieces for one item as they are produced."""
        from mm.runtime import scoped_threads

        resolved = self.resolve_call_options(options)
        if self.is_batch(inputs):
            raise InvalidInputError(f"{type(self).__name__}.stream() takes one item, not a list")
        with scoped_threads(self.threads):
            yield from self._stream(inputs, **resolved)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, model={self.model_id!r})"
