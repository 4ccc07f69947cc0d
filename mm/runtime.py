"""Device, dtype and thread choice, and the shared in-memory model cache.

``dtype="auto"`` picks bfloat16 only where the CPU has native bf16 matrix
instructions (AVX512-BF16 or AMX); on AVX2-only CPUs bf16 matmuls are emulated
and slower than fp32 (see docs/backbone.md, "Choosing a setting").

>>> resolve_device("auto")
'cpu'
>>> resolve_dtype("float32")
torch.float32
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mm.errors import InvalidInputError, choices_text

log = logging.getLogger(__name__)

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty where unavailable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; otherwise validate the name."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" or (device.startswith("cuda") and torch.cuda.is_available()):
        return device
    raise InvalidInputError(f"device {device!r} is not available here; use 'auto' or 'cpu'")


def resolve_dtype(dtype: Any = "auto", device: str = "cpu"):
    """Map a dtype name (or torch.dtype) to a torch dtype; ``auto`` follows the CPU's bf16 support."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    name = DTYPES.get(str(dtype).lower())
    if name is None:
        raise InvalidInputError(f"unknown dtype {dtype!r}; valid: 'auto', {choices_text(DTYPES)}")
    return getattr(torch, name)


def configure_torch(threads: int | None = None) -> None:
    """Process-wide torch settings for mm's command line (never called by library code).

    Flushes denormals (``torch.set_flush_denormal(True)``, on the calling thread and the threads it
    starts later) and sets the thread count to ``threads``, else ``MM_NUM_THREADS``, else all
    cores. The ``mm`` CLI and ``mm serve`` call this once at start-up; pipelines, the apps' builders
    and ``mm.server.create_app`` never do, so a library user keeps full control of torch (threads
    are per call through ``threads=``, see :func:`scoped_threads`).
    """
    import torch

    torch.set_flush_denormal(True)
    wanted = threads or int(os.environ.get("MM_NUM_THREADS", "0")) or (os.cpu_count() or 1)
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def flush_denormal_enabled() -> bool:
    """Whether this thread flushes denormal floats to zero (torch has a setter but no getter).

    Process-wide torch state that only :func:`configure_torch` (the CLI) changes: a library call
    leaves it as the caller set it (``tests/core/test_api_shape.py`` checks every pipeline).

    >>> import torch
    >>> before = flush_denormal_enabled()
    >>> supported = torch.set_flush_denormal(True)  # False where the CPU cannot flush
    >>> flush_denormal_enabled() == supported
    True
    >>> _ = torch.set_flush_denormal(before)
    """
    import torch

    return bool((torch.tensor([1e-39], dtype=torch.float32) * 1.0).item() == 0.0)


@contextlib.contextmanager
def scoped_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` torch threads inside the block and restore the previous count after it.

    ``None`` changes nothing. torch's thread count is process-wide: two pipelines with different
    ``threads=`` running at the same moment in two Python threads see each other's setting.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with scoped_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    if previous != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def restores_global_rng(fn: Callable) -> Callable:
    """Decorate a function that seeds torch's global RNG (e.g. to build random weights) so that the
    caller's global RNG state is the same after the call as before it.

    >>> import torch
    >>> @restores_global_rng
    ... def noisy():
    ...     torch.manual_seed(0)
    ...     return torch.rand(1)
    >>> state = torch.get_rng_state(); _ = noisy(); torch.equal(state, torch.get_rng_state())
    True
    """

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.random.fork_rng(devices=[]):
            return fn(*args, **kwargs)

    return run


def seeded_generator(seed: int | None, device: str = "cpu") -> Any:
    """A fresh ``torch.Generator`` seeded with ``seed`` (None: None, i.e. torch's default generator).

    >>> g = seeded_generator(3)
    >>> import torch
    >>> torch.rand(2, generator=g).tolist() == torch.rand(2, generator=seeded_generator(3)).tolist()
    True
    """
    if seed is None:
        return None
    import torch

    return torch.Generator(device=device).manual_seed(int(seed))


def quiet_transformers_loading() -> None:
    """Hide transformers' weight-loading bars and info logs (mm's own progress bars show the real work)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


_cache: weakref.WeakValueDictionary[tuple, Any] = weakref.WeakValueDictionary()
_cache_lock = threading.Lock()


def cached_model(key: tuple, loader: Callable[[], Any]) -> Any:
    """Return the object cached under ``key`` or build it with ``loader``.

    Entries are weak: a model is freed once no pipeline holds it, and two pipelines on the
    same (path, device, dtype, ...) share one copy in memory. Building a torch module draws its
    initial weights from the global RNG, so ``loader`` runs under a forked RNG: loading a model
    (also lazily, on a pipeline's first call) leaves the caller's global RNG state as it was.
    """
    with _cache_lock:
        obj = _cache.get(key)
        if obj is not None:
            return obj
        torch = sys.modules.get("torch")
        with torch.random.fork_rng(devices=[]) if torch is not None else contextlib.nullcontext():
            obj = loader()
        _cache[key] = obj
        return obj
