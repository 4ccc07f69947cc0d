"""LFM2-VL (``Lfm2VlForConditionalGeneration``) with its tokenizer and mm's image preprocessing.

>>> import tempfile, mm.testing
>>> vl = load_lfm2_vl(mm.testing.make_tiny_lfm2_vl(tempfile.mkdtemp()), dtype="float32", quantize="int8")
>>> type(vl).__name__, vl.quantize, type(vl.preprocessor).__name__
('VisionLanguageModel', 'int8', 'ImagePreprocessor')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mm.backbone import Backbone
from mm.encoders.vision import ImagePreprocessor, VisionInputs
from mm.errors import CheckpointError
from mm.models.loading import load_model, quantize_int8

IMAGE_TOKEN = "<image>"


def load_lfm2_vl(model: str | Path, *, device: str = "auto", dtype: Any = "auto",
                 quantize: str | None = None) -> VisionLanguageModel:
    """Load an LFM2-VL checkpoint once per (path, device, dtype, quantize).

    ``quantize="int8"``: dynamic int8 for the language model's linear layers and its LM head (fp32
    activations, needs ``dtype="float32"``); the vision tower and projector stay in float.
    """
    return load_model("lfm2-vl", model, load=_load, quantizers={"int8": _quantize}, device=device, dtype=dtype,
                      quantize=quantize)


def _load(path: Path, device: str, dtype: Any) -> VisionLanguageModel:
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    preprocessor = ImagePreprocessor.from_pretrained(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"could not load an LFM2-VL model from {str(path)!r}: {exc}") from exc
    if not hasattr(model, "model") or not hasattr(model.model, "get_image_features"):
        raise CheckpointError(f"{str(path)!r} is not a vision-language checkpoint ({type(model).__name__})")
    model = model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    vocab = tokenizer.get_vocab()
    image_id = vocab.get(IMAGE_TOKEN)
    if image_id is not None and getattr(model.config, "image_token_index", None) == image_id:
        model.config.image_token_id = image_id  # older configs spell it image_token_index
    if image_id is None or image_id != model.config.image_token_id:
        raise CheckpointError(f"the tokenizer's {IMAGE_TOKEN} id ({image_id}) does not match the model's "
                              f"image_token_id ({model.config.image_token_id})")
    if getattr(tokenizer, "chat_template", None) is None:
        raise CheckpointError(f"the tokenizer in {str(path)!r} has no chat template")
    vl = VisionLanguageModel(model, tokenizer, path, device, dtype)
    vl.preprocessor = preprocessor
    vl.special_vocab = {tok for tok in vocab if tok.startswith("<|") or tok == IMAGE_TOKEN}
    return vl


def _quantize(vl: VisionLanguageModel) -> VisionLanguageModel:
    import torch

    vl.model.model.language_model = quantize_int8(vl.model.model.language_model)
    vl.model.lm_head = quantize_int8(torch.nn.Sequential(vl.model.lm_head))[0]  # the root module is not swapped
    vl.quantize = "int8"
    return vl


class VisionLanguageModel(Backbone):
    """An ``Lfm2VlForConditionalGeneration`` + tokenizer + the checkpoint's image preprocessing.

    Build it with :func:`load_lfm2_vl`.
    """

    preprocessor: ImagePreprocessor
    special_vocab: set[str]

    @classmethod
    def load(cls, model: str | Path, *, device: str = "auto", dtype: Any = "auto",
             quantize: str | None = None) -> VisionLanguageModel:
        """Same as :func:`load_lfm2_vl`."""
        return load_lfm2_vl(model, device=device, dtype=dtype, quantize=quantize)

    def _fast_target(self) -> tuple[Any, Any] | None:
        """The LFM2 language model inside LFM2-VL and its LM head, for mm's fast decode loop."""
        from mm import fast_decode

        language = getattr(getattr(self.model, "model", None), "language_model", None)
        if fast_decode.supports_backbone(language) and hasattr(self.model, "lm_head"):
            return language, self.model.lm_head
        return None

    def _fast_inputs_embeds(self, inputs: dict) -> Any:
        """Token embeddings with the image features in the ``<image>`` positions, as LFM2-VL's forward merges them."""
        import torch

        with torch.inference_mode():
            embeds = self.model.get_input_embeddings()(inputs["input_ids"])
            encoded = (inputs.get("mm_encoder_outputs") or {}).get("image")
            if encoded is None:
                return embeds
            features = torch.cat(list(encoded.pooler_output), dim=0).to(embeds.dtype)
            mask = self.model.model.get_placeholder_mask(inputs["input_ids"], embeds, features)
            return embeds.masked_scatter(mask, features)

    def image_features(self, vision: VisionInputs) -> Any:
        """Run the vision tower + projector on all tiles; padding beyond the longest tile is cut first.

        Padded patch rows are masked out in the vision tower, so cutting them changes no valid output
        (up to float summation order) and saves their compute.
        """
        import torch

        longest = int(vision.pixel_attention_mask.sum(1).max())
        dtype = self.model.dtype
        with torch.inference_mode():
            return self.model.model.get_image_features(
                pixel_values=vision.pixel_values[:, :longest].to(self.device, dtype),
                spatial_shapes=vision.spatial_shapes.to(self.device),
                pixel_attention_mask=vision.pixel_attention_mask[:, :longest].to(self.device),
                return_dict=True,
            )
