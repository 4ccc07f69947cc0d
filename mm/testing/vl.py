"""Tiny random LFM2-VL checkpoints (``Lfm2VlForConditionalGeneration``) in the real file layout.

The checkpoint has a SigLIP2-NaFlex vision tower, the pixel-unshuffle projector and an LFM2 text
model, a byte-level BPE tokenizer carrying LFM2-VL's image special tokens (``<image>``,
``<|image_start|>``, ``<|image_end|>``, ``<|img_thumbnail|>``, ``<|img_row_R_col_C|>``), the real
LFM2-VL chat template, and the processor settings in either layout.

>>> import tempfile
>>> from transformers import AutoModelForImageTextToText
>>> path = make_tiny_lfm2_vl(tempfile.mkdtemp(), seed=0)
>>> type(AutoModelForImageTextToText.from_pretrained(path)).__name__
'Lfm2VlForConditionalGeneration'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from mm.runtime import restores_global_rng
from mm.testing.lfm2 import tiny_lfm2_config
from mm.testing.tokenizer import LFM2_SPECIAL_TOKENS, save_fast_tokenizer, train_tokenizer

#: the chat template LFM2-VL checkpoints ship (``chat_template.jinja``)
LFM2_VL_CHAT_TEMPLATE = (
    "{{bos_token}}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<image>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)

#: LFM2-VL's image special tokens (added after LFM2's own special tokens)
LFM2_VL_IMAGE_TOKENS: list[str] = [
    "<image>", "<|image_start|>", "<|image_end|>", "<|img_thumbnail|>",
    *(f"<|img_row_{r}_col_{c}|>" for r in range(1, 11) for c in range(1, 11)),
]

#: LFM2-VL-450M's image-processor settings (LFM2-VL-1.6B: use_thumbnail=True, max_pixels_tolerance=1.5)
LFM2_VL_450M_PROCESSOR: dict[str, Any] = {
    "do_image_splitting": True, "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
    "downsample_factor": 2, "encoder_patch_size": 16, "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "Lfm2VlImageProcessor", "image_std": [0.5, 0.5, 0.5], "max_image_tokens": 256,
    "max_num_patches": 1024, "max_pixels_tolerance": 2.0, "max_tiles": 10, "min_image_tokens": 64,
    "min_tiles": 2, "resample": 2, "rescale_factor": 1 / 255, "size": {"height": 512, "width": 512},
    "tile_size": 512, "use_thumbnail": False,
}

_PREPROCESSOR_KEYS = ("do_normalize", "do_rescale", "do_resize", "image_mean", "image_std", "resample",
                      "rescale_factor", "max_num_patches")


def lfm2_vl_450m_config(vocab_size: int = 65536, image_token_id: int = 396):
    """The full-size LFM2-VL-450M ``Lfm2VlConfig`` (for benchmarks with random weights)."""
    from transformers import Lfm2Config, Lfm2VlConfig, Siglip2VisionConfig

    attention = {2, 5, 8, 10, 12, 14}
    text = Lfm2Config(
        vocab_size=vocab_size, hidden_size=1024, intermediate_size=6656, num_hidden_layers=16,
        num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=128000, norm_eps=1e-5,
        conv_L_cache=3, block_auto_adjust_ff_dim=True, block_ffn_dim_multiplier=1.0, block_multiple_of=256,
        layer_types=["full_attention" if i in attention else "conv" for i in range(16)], rope_theta=1000000.0,
        bos_token_id=1, eos_token_id=7, pad_token_id=0, tie_word_embeddings=True,
    )
    vision = Siglip2VisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, num_channels=3, num_patches=256, patch_size=16,
                                 hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
    return Lfm2VlConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=image_token_id,
                        projector_hidden_size=2560, projector_hidden_act="gelu", projector_bias=True,
                        downsample_factor=2)


def tiny_lfm2_vl_config(vocab_size: int, image_token_id: int, **text_overrides):
    """A small ``Lfm2VlConfig``: 2-layer SigLIP2 tower (hidden 32), projector, 4-layer LFM2 (hidden 64)."""
    from transformers import Lfm2VlConfig, Siglip2VisionConfig

    vision = Siglip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 num_channels=3, num_patches=256, patch_size=16, vision_use_head=False)
    text = tiny_lfm2_config(vocab_size=vocab_size, **text_overrides)
    return Lfm2VlConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=image_token_id,
                        projector_hidden_size=64, downsample_factor=2)


def write_processor_config(directory: str | Path, settings: dict[str, Any], *,
                           layout: Literal["transformers5", "split"] = "transformers5") -> None:
    """Write image-processor ``settings`` as transformers 5 does, or split like the early LiquidAI repos."""
    directory = Path(directory)
    if layout == "transformers5":
        data = {"image_processor": dict(settings), "processor_class": "Lfm2VlProcessor"}
        (directory / "processor_config.json").write_text(json.dumps(data, indent=2, sort_keys=True))
        return
    if layout != "split":
        raise ValueError(f"layout must be 'transformers5' or 'split', got {layout!r}")
    pre = {k: settings[k] for k in _PREPROCESSOR_KEYS if k in settings}
    pre.update(image_processor_type="Siglip2ImageProcessorFast", processor_class="Lfm2VlProcessor",
               patch_size=settings.get("encoder_patch_size", 16))
    proc = {k: v for k, v in settings.items() if k not in _PREPROCESSOR_KEYS and k not in ("size", "image_processor_type")}
    proc.update(processor_class="Lfm2VlProcessor", use_image_special_tokens=True)
    (directory / "preprocessor_config.json").write_text(json.dumps(pre, indent=2, sort_keys=True))
    (directory / "processor_config.json").write_text(json.dumps(proc, indent=2, sort_keys=True))


def save_vl_tokenizer(tokenizer: Any, directory: str | Path) -> None:
    """Save ``tokenizer`` with LFM2-VL's chat template and image-token attributes."""
    save_fast_tokenizer(tokenizer, directory, chat_template=LFM2_VL_CHAT_TEMPLATE)
    path = Path(directory) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(image_token="<image>", image_start_token="<|image_start|>", image_end_token="<|image_end|>",
                  image_thumbnail="<|img_thumbnail|>", processor_class="Lfm2VlProcessor")
    path.write_text(json.dumps(config, indent=2))


@restores_global_rng
def make_tiny_lfm2_vl(directory: str | Path, *, seed: int = 0, vocab_size: int = 512, dtype: str = "float32",
                      processor: dict[str, Any] | None = None,
                      layout: Literal["transformers5", "split"] = "transformers5") -> Path:
    """Write a tiny random LFM2-VL checkpoint (model, tokenizer, chat template, processor config); return its path.

    ``processor`` overrides LFM2-VL-450M's image-processor settings (e.g. ``{"use_thumbnail": True,
    "max_pixels_tolerance": 1.5}`` for the 1.6B style); ``layout`` picks the config file layout.
    """
    import torch
    from transformers import GenerationConfig, Lfm2VlForConditionalGeneration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab_size, LFM2_SPECIAL_TOKENS + LFM2_VL_IMAGE_TOKENS)
    config = tiny_lfm2_vl_config(tokenizer.get_vocab_size(), tokenizer.token_to_id("<image>"))
    torch.manual_seed(seed)
    model = Lfm2VlForConditionalGeneration(config).to(getattr(torch, dtype)).eval()
    with torch.no_grad():  # larger logits than the 0.02 init, so greedy text is not one repeated token
        for name, param in model.named_parameters():
            if name.endswith(("out_proj.weight", "w2.weight", "o_proj.weight", "linear_2.weight")):
                param.mul_(6.0)
        # tied embeddings: shrink the special tokens' rows so random weights prefer text tokens to markers
        n_special = len(LFM2_SPECIAL_TOKENS) + len(LFM2_VL_IMAGE_TOKENS)
        model.get_input_embeddings().weight[:n_special].mul_(0.05)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=7, pad_token_id=0)
    model.save_pretrained(str(directory))
    save_vl_tokenizer(tokenizer, directory)
    write_processor_config(directory, {**LFM2_VL_450M_PROCESSOR, **(processor or {})}, layout=layout)
    return directory
