"""mm's native CPU kernels: matrix-vector products and a whole LFM2 decode step, compiled for this CPU at first use.

:mod:`mm.kernels.build` compiles and loads ``lfm2_step.cpp``; :mod:`mm.kernels.weights` packs weights in its
formats; :mod:`mm.kernels.lfm2` runs a decode step of an LFM2 backbone on them (used by :mod:`mm.fast_decode`).
"""

from mm.kernels.build import KernelUnavailableError, available, unavailable_reason

__all__ = ["KernelUnavailableError", "available", "unavailable_reason"]
