"""The one load sequence of every model family: resolve -> load in dtype -> quantize -> (engine).

>>> check_quantize("int4", None)
Traceback (most recent call last):
...
mm.errors.InvalidInputError: quantize='int4' is not supported here; valid: 'int8'
>>> check_engine("turbo")
Traceback (most recent call last):
...
mm.errors.InvalidInputError: engine='turbo' is not supported; valid: 'auto', 'fast', 'native', 'transformers'
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mm import hub, runtime
from mm.errors import InvalidInputError, choices_text

log = logging.getLogger(__name__)

T = TypeVar("T")

#: every quantization mm implements somewhere; each loader passes the subset it implements
QUANTIZE_CHOICES = ("int8", "int4")
#: ``native``: mm's decode loop on its native kernels (mm.kernels); ``fast``: the same loop on torch's ops (the
#: same tokens as transformers, bit for bit); ``auto``: native when the kernels run here, else fast, else transformers
ENGINE_CHOICES = ("auto", "native", "fast", "transformers")


def check_quantize(quantize: str | None, dtype: Any, choices: Sequence[str] = ("int8",)) -> str | None:
    """Validate ``quantize`` (None or one of ``choices``) against the resolved torch ``dtype``, before anything loads.

    ``int8`` (dynamic, fp32 activations) needs float32; ``int4`` (group-wise weight-only, :mod:`mm.quant`) runs
    bfloat16 or float32 activations. Loaders pass the ``choices`` they implement.
    """
    import torch

    if quantize is not None and quantize not in choices:
        raise InvalidInputError(f"quantize={quantize!r} is not supported here; valid: {choices_text(choices)}")
    if quantize == "int8" and dtype != torch.float32:
        raise InvalidInputError("quantize='int8' needs dtype='float32' (dynamic int8 runs fp32 activations)")
    if quantize == "int4" and dtype not in (torch.bfloat16, torch.float32):
        raise InvalidInputError(f"quantize='int4' needs dtype='bfloat16' or 'float32', got {dtype}")
    return quantize


def check_engine(engine: str) -> str:
    """Validate an ``engine`` name (``auto``, ``native``, ``fast`` or ``transformers``)."""
    if engine not in ENGINE_CHOICES:
        raise InvalidInputError(f"engine={engine!r} is not supported; valid: {choices_text(ENGINE_CHOICES)}")
    return engine


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantization of every ``nn.Linear`` (weights int8, activations quantized per call).

    LFM2's gated MLPs then run ``w1``/``w3`` as one int8 matrix (:func:`mm.int8_linear.fuse_gated_mlps`: same
    outputs, one pass over the weights per call).
    """
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    from mm.int8_linear import fuse_gated_mlps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)
    fuse_gated_mlps(quantized)
    return quantized


def load_model(family: str, model: str | Path, *, load: Callable[[Path, str, Any], T],
               quantizers: Mapping[str, Callable[[T], T]] | None = None, device: str = "auto", dtype: Any = "auto",
               quantize: str | None = None, required: tuple[str, ...] = ("config.json",),
               cpu_only: bool = False, cache: bool = True) -> T:
    """Load ``model`` of ``family``: the sequence every loader in :mod:`mm.models` runs.

    1. resolve ``model`` to a local folder (directory, HF cache, or a download when online);
    2. resolve ``device`` and ``dtype`` and check ``quantize`` against them, before any weight is read;
    3. ``load(path, device, torch_dtype)`` reads the weights in that dtype (``local_files_only``);
    4. ``quantizers[quantize](obj)`` when ``quantize`` is set (``quantizers`` names what the family implements;
       a family without any refuses quantization);
    5. the engine (mm's fast decode loop) is built by the model object on first use, over these weights.

    With ``cache`` the result is shared per (family, path, device, dtype, quantize) while anyone holds it.
    """
    path = hub.resolve_model(model, required=required)
    device = runtime.resolve_device(device)
    if cpu_only and device != "cpu":
        raise InvalidInputError(f"{family} runs on the CPU in mm; got device={device!r}")
    torch_dtype = runtime.resolve_dtype(dtype, device)
    if quantize is not None and not quantizers:
        raise InvalidInputError(f"{family} models cannot be quantized in mm; drop quantize={quantize!r}")
    check_quantize(quantize, torch_dtype, tuple(quantizers or ()))

    def build() -> T:
        obj = load(path, device, torch_dtype)
        if quantize is not None:
            obj = quantizers[quantize](obj)
        log.info("loaded %s %s on %s as %s%s", family, path, device, torch_dtype, f" ({quantize})" if quantize else "")
        return obj

    if not cache:
        return build()
    return runtime.cached_model((family, str(path), device, str(torch_dtype), quantize), build)
