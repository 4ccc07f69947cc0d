"""Factories for tiny random checkpoints in the real file layouts, for tests and examples.

Each factory writes a directory that loads through the same ``from_pretrained``
path as the real checkpoint (config, safetensors, a locally trained tokenizer
with the real special tokens and chat template).

>>> import tempfile, mm.testing
>>> path = mm.testing.make_tiny_lfm2(tempfile.mkdtemp())
>>> sorted(p.name for p in path.iterdir())[:2]
['chat_template.jinja', 'config.json']
"""

from mm.testing.audio import AUDIO_SPECIAL_TOKENS, make_tiny_lfm2_audio
from mm.testing.colbert import LFM2_COLBERT_350M_CONFIG, make_tiny_colbert
from mm.testing.lfm2 import LFM2_CHAT_TEMPLATE, make_tiny_lfm2
from mm.testing.tokenizer import LFM2_SPECIAL_TOKENS, train_tokenizer
from mm.testing.vl import LFM2_VL_CHAT_TEMPLATE, LFM2_VL_IMAGE_TOKENS, make_tiny_lfm2_vl

__all__ = ["AUDIO_SPECIAL_TOKENS", "LFM2_CHAT_TEMPLATE", "LFM2_COLBERT_350M_CONFIG", "LFM2_SPECIAL_TOKENS",
           "LFM2_VL_CHAT_TEMPLATE", "LFM2_VL_IMAGE_TOKENS", "make_tiny_colbert", "make_tiny_lfm2",
           "make_tiny_lfm2_audio", "make_tiny_lfm2_vl", "train_tokenizer"]
