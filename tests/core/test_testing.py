"""mm.testing factories write loadable checkpoints in the real layout."""

from __future__ import annotations

from transformers import AutoConfig, AutoTokenizer

from mm.testing import LFM2_SPECIAL_TOKENS


def test_tiny_lfm2_layout_and_tokenizer(tiny_lfm2):
    names = {p.name for p in tiny_lfm2.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert AutoConfig.from_pretrained(tiny_lfm2).model_type == "lfm2"
    tok = AutoTokenizer.from_pretrained(tiny_lfm2)
    for i, token in enumerate(LFM2_SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(token) == i
    assert tok("hi")["input_ids"][0] == 1  # BOS prepended like LFM2
    text = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                                   add_generation_prompt=True, tokenize=False)
    assert text == "<|startoftext|><|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
