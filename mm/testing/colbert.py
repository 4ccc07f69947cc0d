"""Tiny random LFM2-ColBERT checkpoints in the layout of ``LiquidAI/LFM2-ColBERT-350M``.

The directory holds an ``Lfm2Model`` backbone with its tokenizer (the ``[Q] ``/``[D] `` prefixes as
added tokens, EOS as pad token, as pylate saves it), ``modules.json`` naming pylate's Dense class,
``1_Dense/`` with ``linear.weight``, ``config_sentence_transformers.json`` and
``sentence_bert_config.json``.

>>> import tempfile, json
>>> path = make_tiny_colbert(tempfile.mkdtemp(), query_length=16)
>>> json.loads((path / "config_sentence_transformers.json").read_text())["query_length"]
16
>>> json.loads((path / "modules.json").read_text())[1]["type"]
'pylate.models.Dense.Dense'
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from mm.runtime import restores_global_rng
from mm.testing.tokenizer import LFM2_SPECIAL_TOKENS, save_fast_tokenizer, train_tokenizer

#: the real LFM2-ColBERT-350M architecture (hidden 1024, 16 layers: 10 conv + 6 attention) for benchmarks
LFM2_COLBERT_350M_CONFIG = dict(
    vocab_size=65536, hidden_size=1024, intermediate_size=6656, num_hidden_layers=16,
    num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=128000,
    layer_types=["conv", "conv", "full_attention", "conv", "conv", "full_attention", "conv", "conv",
                 "full_attention", "conv", "full_attention", "conv", "full_attention", "conv",
                 "full_attention", "conv"],
    conv_L_cache=3, block_auto_adjust_ff_dim=True, block_ffn_dim_multiplier=1.0, block_multiple_of=256,
    norm_eps=1e-5, rope_theta=1000000.0,
)


@restores_global_rng
def make_tiny_colbert(directory: str | Path, *, seed: int = 0, vocab_size: int = 600, hidden_size: int = 64,
                      embedding_size: int = 128, query_length: int = 32, document_length: int = 512,
                      query_prefix: str = "[Q] ", document_prefix: str = "[D] ",
                      do_query_expansion: bool = True, attend_to_expansion_tokens: bool = False,
                      skiplist_words: list[str] | None = None, dense_type: str = "pylate.models.Dense.Dense",
                      full_size: bool = False, **config_overrides) -> Path:
    """Write a random LFM2-ColBERT checkpoint and return its path.

    ``full_size=True`` uses the real LFM2-ColBERT-350M architecture (for throughput benchmarks;
    about 1.4 GB of float32 weights).
    """
    import torch
    from safetensors.torch import save_file
    from tokenizers import AddedToken
    from transformers import Lfm2Config, Lfm2Model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab_size, LFM2_SPECIAL_TOKENS)
    prefixes = [p for p in (query_prefix, document_prefix) if p]
    tokenizer.add_tokens([AddedToken(p, normalized=True, special=False) for p in prefixes])
    if full_size:
        settings = dict(LFM2_COLBERT_350M_CONFIG)
    else:
        settings = dict(
            hidden_size=hidden_size, intermediate_size=hidden_size * 3, num_hidden_layers=6,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            layer_types=["conv", "conv", "full_attention", "conv", "conv", "full_attention"], conv_L_cache=3,
            block_auto_adjust_ff_dim=False,
        )
        settings["vocab_size"] = tokenizer.get_vocab_size()
    settings.update(bos_token_id=1, eos_token_id=7, pad_token_id=0, tie_word_embeddings=True)
    settings.update(config_overrides)
    config = Lfm2Config(**settings)
    config.architectures = ["Lfm2Model"]
    torch.manual_seed(seed)
    model = Lfm2Model(config).eval()
    model.save_pretrained(str(directory))
    save_fast_tokenizer(tokenizer, directory, eos="<|im_end|>", pad="<|im_end|>")
    dense_dir = directory / "1_Dense"
    dense_dir.mkdir(exist_ok=True)
    weight = torch.randn(embedding_size, config.hidden_size) * (config.hidden_size ** -0.5)
    save_file({"linear.weight": weight.contiguous()}, str(dense_dir / "model.safetensors"))
    (dense_dir / "config.json").write_text(json.dumps({
        "in_features": config.hidden_size, "out_features": embedding_size, "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity", "use_residual": False}, indent=4))
    (directory / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": dense_type},
    ], indent=2))
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": document_length - 1, "do_lower_case": False}, indent=4))
    (directory / "config_sentence_transformers.json").write_text(json.dumps({
        "model_type": "ColBERT", "prompts": {"query": "", "document": ""}, "default_prompt_name": None,
        "similarity_fn_name": "MaxSim", "query_prefix": query_prefix, "document_prefix": document_prefix,
        "query_length": query_length, "document_length": document_length,
        "attend_to_expansion_tokens": attend_to_expansion_tokens,
        "skiplist_words": list(string.punctuation) if skiplist_words is None else list(skiplist_words),
        "do_query_expansion": do_query_expansion,
    }, indent=2))
    return directory
