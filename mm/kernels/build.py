"""Compile mm's native kernels for this CPU at first use, and load them.

Two sources, each its own shared library: ``lfm2_step.cpp`` (decode steps, :func:`library`) and
``late_interaction.cpp`` (the multi-vector index's probe and lookup-table scoring, ``library("late_interaction")``).
A source is compiled once per machine with the C++ compiler found on ``PATH`` (``$CXX``, else ``g++``/``c++``)
and ``-O3 -march=native -fopenmp``, so the kernels use the instruction set of the CPU they run on (AVX2 + FMA,
AVX-512 where present). The shared library is cached under ``$MM_KERNEL_CACHE`` (default
``~/.cache/mm/kernels``), keyed by the source, the compiler and the CPU's flags, and written atomically so
concurrent processes never load a half-written file. Nothing process-wide is changed: the library joins the
OpenMP runtime torch already loaded (``libgomp``), and each call takes its thread count as an argument.

>>> lib = library()
>>> lib is None or hasattr(lib, "mm_step")
True
>>> available() == (lib is not None)
True
>>> library("late_interaction") is None or hasattr(library("late_interaction"), "mm_adc_maxsim")
True
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from mm.errors import MMError

log = logging.getLogger(__name__)

#: kernel name -> (source file, {C entry point: its ctypes return type})
SOURCES = {"lfm2_step": (Path(__file__).with_name("lfm2_step.cpp"),
                         {"mm_gemv": None, "mm_step": None, "mm_scratch_floats": ctypes.c_long}),
           "late_interaction": (Path(__file__).with_name("late_interaction.cpp"),
                                {"mm_adc_maxsim": None, "mm_probe_candidates": ctypes.c_int64,
                                 "mm_top_centroids": None})}
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
COMPILE_TIMEOUT_S = 300


class KernelUnavailableError(MMError):
    """The native kernels could not be built or loaded here (no C++ compiler, or the build failed)."""


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$MM_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/mm/kernels`` or ``~/.cache``."""
    if os.environ.get("MM_KERNEL_CACHE"):
        return Path(os.environ["MM_KERNEL_CACHE"])
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "mm" / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(cxx: str, name: str) -> Path:
    source = SOURCES[name][0]
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\n".join([source.read_text(), version, " ".join(FLAGS), _cpu_flags()]).encode())
    target = cache_dir() / f"{name}-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".so.tmp", delete=False) as tmp:
        partial = Path(tmp.name)
    try:
        done = subprocess.run([cxx, *FLAGS, str(source), "-o", str(partial)], capture_output=True, text=True,
                              timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            raise KernelUnavailableError(f"compiling {source.name} with {cxx} failed: {done.stderr.strip()[-800:]}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    log.info("compiled mm's native kernels into %s", target)
    return target


@functools.cache
def _load(name: str = "lfm2_step") -> tuple[ctypes.CDLL | None, str]:
    if name not in SOURCES:
        raise ValueError(f"no native kernel named {name!r} (known: {sorted(SOURCES)})")
    cxx = _compiler()
    if cxx is None:
        log.info("mm's native kernels %s are unavailable: no C++ compiler on PATH", name)
        return None, "no C++ compiler on PATH (install g++, or set CXX)"
    try:
        lib = ctypes.CDLL(str(_build(cxx, name)))
    except (KernelUnavailableError, OSError, subprocess.SubprocessError) as exc:
        log.info("mm's native kernels %s are unavailable: %s", name, exc)
        return None, str(exc)
    for entry, restype in SOURCES[name][1].items():
        getattr(lib, entry).restype = restype
    return lib, ""


def library(name: str = "lfm2_step") -> ctypes.CDLL | None:
    """The loaded kernels ``name`` (see :data:`SOURCES`), or None when they cannot be built here
    (see :func:`unavailable_reason`; logged once, at INFO, when first found out: the index asks on every query)."""
    return _load(name)[0]


def available(name: str = "lfm2_step") -> bool:
    """True when the native kernels ``name`` are built (or can be) and loaded."""
    return _load(name)[0] is not None


def unavailable_reason(name: str = "lfm2_step") -> str:
    """Why :func:`library` returned None ('' when the kernels are available)."""
    return _load(name)[1]


def require(name: str = "lfm2_step") -> ctypes.CDLL:
    """The loaded kernels ``name``; :class:`KernelUnavailableError` with the reason when they cannot be built."""
    lib, reason = _load(name)
    if lib is None:
        raise KernelUnavailableError(f"mm's native kernels are unavailable: {reason}")
    return lib
