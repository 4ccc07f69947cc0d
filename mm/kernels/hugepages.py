"""Weights on 2 MB pages: a decode step streams every weight once, and with 4 KB pages every 4 KB costs a TLB miss.

:class:`HugePagePool` hands out tensors from large 2 MB-aligned private anonymous mappings advised for huge
pages (``MADV_HUGEPAGE``). :class:`mm.fast_decode.FastLfm2` moves the weights its native step reads into one
pool (float matrices, fused groups, int8 rows, int4 codes), so many small matrices share whole huge pages and
weights that were memory-mapped from a checkpoint file (transformers loads same-dtype safetensors that way) are
read from anonymous memory. Measured on a 2-core AVX2 EPYC: ``python benchmarks/native_step.py --threads 2
--compare hugepages`` (docs/backbone-speed.md). Where the OS has no huge pages (not Linux, turned off) the pool is
ordinary memory; only the backing changes, never the values.

>>> pool = HugePagePool()
>>> t = pool.copy(torch.arange(6, dtype=torch.int8).view(2, 3))
>>> t.tolist(), t.data_ptr() % 64, pool.used, pool.owns(t), pool.owns(torch.zeros(3))
([[0, 1, 2], [3, 4, 5]], 0, 6, True, False)
>>> pool.advised in (0, pool.chunk)  # the whole first mapping, where the OS takes huge-page advice
True
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import weakref

import torch

PAGE = 2 << 20
_ALIGN = 64
_MADV_HUGEPAGE = 14


def _madvise() -> ctypes._CFuncPtr | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


_MADVISE = _madvise()


_LIVE_POOLS: weakref.WeakSet[HugePagePool] = weakref.WeakSet()


def in_any_pool(t: torch.Tensor) -> bool:
    """Whether ``t``'s memory comes from a live :class:`HugePagePool` (e.g. another decode loop's)."""
    return any(pool.owns(t) for pool in list(_LIVE_POOLS))


def _advise_huge(start: int, size: int) -> bool:
    """Ask for huge pages on ``size`` bytes from the 2 MB-aligned address ``start``; whether the OS took the advice."""
    return _MADVISE is not None and _MADVISE(start, size, _MADV_HUGEPAGE) == 0


class HugePagePool:
    """Tensors carved from 2 MB-aligned mappings (``chunk`` bytes each, more for a larger tensor) advised for
    huge pages; each tensor starts on a 64-byte boundary. Memory is committed as the tensors are written, so a
    chunk's unused tail costs address space only. A mapping lives as long as any tensor carved from it."""

    def __init__(self, chunk: int = 64 << 20) -> None:
        self.chunk = chunk
        self._arena: torch.Tensor | None = None
        self._used = 0
        self.advised = 0  # bytes of the pool's mappings the OS took huge-page advice for
        self.used = 0  # bytes handed out
        self._spans: list[tuple[int, int]] = []  # address ranges of the mappings
        _LIVE_POOLS.add(self)

    def _new_arena(self, nbytes: int) -> None:
        size = max(self.chunk, (nbytes + PAGE - 1) // PAGE * PAGE)
        whole = torch.frombuffer(mmap.mmap(-1, size + PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS),
                                dtype=torch.uint8)
        offset = (-whole.data_ptr()) % PAGE
        self._arena = whole[offset:offset + size]
        self._spans.append((self._arena.data_ptr(), self._arena.data_ptr() + size))
        self._used = 0
        self.advised += size if _advise_huge(self._arena.data_ptr(), size) else 0

    def empty(self, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous tensor from the pool."""
        if torch.Size(shape).numel() == 0:
            return torch.empty(shape, dtype=dtype)
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        start = (self._used + _ALIGN - 1) // _ALIGN * _ALIGN
        if self._arena is None or start + nbytes > self._arena.numel():
            self._new_arena(nbytes)
            start = 0
        self._used = start + nbytes
        self.used += nbytes
        return self._arena[start:start + nbytes].view(dtype).view(shape)

    def owns(self, t: torch.Tensor) -> bool:
        """Whether ``t``'s memory was handed out by this pool."""
        return any(start <= t.data_ptr() < end for start, end in self._spans)

    def copy(self, t: torch.Tensor) -> torch.Tensor:
        """A contiguous copy of ``t`` in the pool."""
        out = self.empty(t.shape, t.dtype)
        out.copy_(t)
        return out
