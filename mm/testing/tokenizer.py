"""Train a small byte-level BPE tokenizer with a given special-token layout.

>>> tok = train_tokenizer(300, LFM2_SPECIAL_TOKENS[:8])
>>> tok.token_to_id("<|im_end|>")
7
"""

from __future__ import annotations

from collections.abc import Sequence

#: LFM2's first special tokens, in id order (ids 0..13)
LFM2_SPECIAL_TOKENS: list[str] = [
    "<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|fim_pre|>", "<|fim_mid|>", "<|fim_suf|>",
    "<|im_start|>", "<|im_end|>", "<|tool_list_start|>", "<|tool_list_end|>", "<|tool_call_start|>",
    "<|tool_call_end|>", "<|tool_response_start|>", "<|tool_response_end|>",
]

#: a small multilingual corpus so the BPE learns real merges
DEFAULT_CORPUS: list[str] = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello! How are you today? I am fine, thank you.",
    "What is the weather like in Paris today? It is sunny and warm.",
    "Liquid neural networks run fast on small devices.",
    "Une phrase en français pour apprendre quelques fusions.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "这是一个简单的中文句子。", "これは日本語の文です。", "이것은 한국어 문장입니다.",
    "مرحبا بالعالم، هذه جملة عربية.",
    "Describe the image in one sentence. A cat sits on a red sofa next to a window.",
    "user assistant system tool image audio text answer question search document query",
]


def train_tokenizer(vocab_size: int, special_tokens: Sequence[str], corpus: Sequence[str] | None = None,
                    add_bos: str | None = "<|startoftext|>"):
    """Return a ``tokenizers.Tokenizer`` (byte-level BPE) whose first ids are ``special_tokens``.

    With ``add_bos`` the post-processor prepends that token when ``add_special_tokens=True``, as LFM2 does.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = list(corpus or DEFAULT_CORPUS)
    tokenizer.train_from_iterator(texts * 4, trainer=trainer)
    if add_bos:
        bos_id = tokenizer.token_to_id(add_bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{add_bos} $A", pair=f"{add_bos} $A {add_bos} $B", special_tokens=[(add_bos, bos_id)]
        )
    return tokenizer


def save_fast_tokenizer(tokenizer, directory, *, chat_template: str | None = None, bos: str = "<|startoftext|>",
                        eos: str = "<|im_end|>", pad: str = "<|pad|>", extra: dict | None = None) -> None:
    """Save ``tokenizer`` as a transformers fast tokenizer (+ ``chat_template.jinja``) into ``directory``."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, pad_token=pad,
                                   **(extra or {}))
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(str(directory))
