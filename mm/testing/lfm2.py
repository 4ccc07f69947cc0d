"""Tiny random LFM2 text checkpoints (``Lfm2ForCausalLM``) in the real file layout.

>>> import tempfile
>>> from transformers import AutoModelForCausalLM
>>> path = make_tiny_lfm2(tempfile.mkdtemp(), seed=0)
>>> type(AutoModelForCausalLM.from_pretrained(path)).__name__
'Lfm2ForCausalLM'
"""

from __future__ import annotations

from pathlib import Path

from mm.runtime import restores_global_rng
from mm.testing.tokenizer import LFM2_SPECIAL_TOKENS, save_fast_tokenizer, train_tokenizer

#: LFM2's chat template (ChatML with BOS, an optional system turn and a tool list)
LFM2_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- set ns = namespace(system_prompt='') -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set ns.system_prompt = messages[0]['content'] -%}"
    "{%- set messages = messages[1:] -%}{%- endif -%}"
    "{%- if tools -%}{%- set ns.system_prompt = ns.system_prompt + ('\\n' if ns.system_prompt else '') + "
    "'List of tools: <|tool_list_start|>' + (tools | tojson) + '<|tool_list_end|>' -%}{%- endif -%}"
    "{%- if ns.system_prompt -%}{{- '<|im_start|>system\\n' + ns.system_prompt + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- set content = message['content'] -%}"
    "{%- if content is not string -%}{%- set content = content | tojson -%}{%- endif -%}"
    "{%- if message['role'] == 'tool' -%}"
    "{%- set content = '<|tool_response_start|>' + content + '<|tool_response_end|>' -%}{%- endif -%}"
    "{{- content + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def tiny_lfm2_config(vocab_size: int = 512, **overrides):
    """A small ``Lfm2Config`` with LFM2's layer pattern (conv, conv, attention, ...)."""
    from transformers import Lfm2Config

    settings = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        layer_types=["conv", "full_attention", "conv", "full_attention"], conv_L_cache=3,
        block_auto_adjust_ff_dim=False, bos_token_id=1, eos_token_id=7, pad_token_id=0,
        tie_word_embeddings=True,
    )
    settings.update(overrides)
    return Lfm2Config(**settings)


@restores_global_rng
def make_tiny_lfm2(directory: str | Path, *, seed: int = 0, vocab_size: int = 512, dtype: str = "float32",
                   **config_overrides) -> Path:
    """Write a tiny random ``Lfm2ForCausalLM`` checkpoint with tokenizer and chat template; return its path."""
    import torch
    from transformers import GenerationConfig, Lfm2ForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab_size, LFM2_SPECIAL_TOKENS)
    config = tiny_lfm2_config(vocab_size=tokenizer.get_vocab_size(), **config_overrides)
    torch.manual_seed(seed)
    model = Lfm2ForCausalLM(config).to(getattr(torch, dtype)).eval()
    with torch.no_grad():  # larger logits than the 0.02 init, so greedy text is not one repeated token
        for name, param in model.named_parameters():
            if name.endswith("out_proj.weight") or name.endswith("w2.weight") or name.endswith("o_proj.weight"):
                param.mul_(6.0)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=7, pad_token_id=0)
    model.save_pretrained(str(directory))
    save_fast_tokenizer(tokenizer, directory, chat_template=LFM2_CHAT_TEMPLATE)
    return directory
