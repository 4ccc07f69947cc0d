"""Fail the install when a package that breaks CPU-only torch got in (torchaudio / torchvision)."""

import importlib.util
import sys

import torch

bad = [name for name in ("torchaudio", "torchvision") if importlib.util.find_spec(name) is not None]
if bad:
    sys.exit(f"error: {', '.join(bad)} got installed; their registry builds are CUDA-only and break "
             f"transformers imports with CPU torch. Remove them: pip uninstall -y {' '.join(bad)}")
if torch.version.cuda is not None or not torch.__version__.startswith("2.13.0"):
    sys.exit(f"error: torch {torch.__version__} (cuda {torch.version.cuda}) installed; mm needs the CPU wheel "
             "torch==2.13.0")
print(f"environment ok: torch {torch.__version__}, no torchaudio/torchvision")
