"""mm's native CPU kernels, compiled for this CPU at first use: matrix-vector products and a whole LFM2 decode
step, and late-interaction scoring of compressed documents.

:mod:`mm.kernels.build` compiles and loads ``lfm2_step.cpp`` and ``late_interaction.cpp``; :mod:`mm.kernels.weights`
packs weights in the step's formats; :mod:`mm.kernels.lfm2` runs a decode step of an LFM2 backbone on them (used
by :mod:`mm.fast_decode`); :mod:`mm.kernels.late_interaction` scores documents from a query's lookup tables (used by
:mod:`mm.index.plaid`).
"""

from mm.kernels.build import KernelUnavailableError, available, unavailable_reason

__all__ = ["KernelUnavailableError", "available", "unavailable_reason"]
