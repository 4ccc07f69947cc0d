"""ColBERT token encoder for sentence-transformers-format checkpoints (LFM2-ColBERT and pylate models).

mm reads the checkpoint itself, without pylate: ``modules.json`` (a Transformer module, then
one or more Dense projections, which may name pylate's own ``Dense`` class),
``config_sentence_transformers.json`` (prefixes, lengths, query expansion, attention to the
expansion tokens, skiplist) and ``sentence_bert_config.json`` (lower-casing). It reproduces
pylate's rules exactly:

* the tokenizer adds BOS; texts are truncated to ``length - 1`` tokens, then the prefix id is
  inserted at position 1 (after BOS);
* queries are padded to ``query_length`` with the MASK token (or EOS when there is none), whose
  attention mask is 0 unless ``attend_to_expansion_tokens``; their vectors are kept, so every query
  yields ``query_length`` vectors;
* documents drop padding and every token whose id is exactly a skiplist word's id;
* vectors are projected, then L2-normalised after filtering.

>>> import tempfile
>>> from mm.testing import make_tiny_colbert
>>> enc = ColBERTEncoder.from_pretrained(make_tiny_colbert(tempfile.mkdtemp()))
>>> q = enc.encode_queries(["Where is the Rhine?"])[0]
>>> q.shape == (enc.settings.query_length, enc.dim)
True
>>> d = enc.encode_documents(["The Rhine flows through Basel."])[0]
>>> round(float(maxsim(q, d)), 3) == round(float((q @ d.T).max(axis=1).sum()), 3)
True
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm.errors import CheckpointError, InvalidInputError

log = logging.getLogger(__name__)

#: module types accepted for the token model (first module)
TRANSFORMER_TYPES = ("sentence_transformers.models.Transformer", "sentence_transformers.base.modules.Transformer",
                     "sentence_transformers.models.Transformer.Transformer")
#: module types accepted for the projections: sentence-transformers' and pylate's Dense (old and new paths)
DENSE_TYPES = ("sentence_transformers.models.Dense", "sentence_transformers.models.Dense.Dense",
               "sentence_transformers.base.modules.Dense", "pylate.models.Dense", "pylate.models.Dense.Dense")
#: modules that change nothing for ColBERT (vectors are L2-normalised anyway)
NORMALIZE_TYPES = ("sentence_transformers.models.Normalize", "sentence_transformers.base.modules.Normalize")
#: pylate's defaults for settings a config file leaves out
PYLATE_DEFAULTS: dict[str, Any] = {
    "query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 32, "document_length": 180,
    "do_query_expansion": True, "attend_to_expansion_tokens": False,
    "skiplist_words": list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
}
#: config_sentence_transformers.json keys that carry no encoding behaviour
_INFORMATIONAL_KEYS = {"__version__", "model_type", "similarity_fn_name", "prompts", "default_prompt_name"}


@dataclass(frozen=True)
class ColBERTSettings:
    """Encoding settings read from the checkpoint (pylate defaults where a key is absent)."""

    query_prefix: str = "[Q] "
    document_prefix: str = "[D] "
    query_length: int = 32
    document_length: int = 180
    do_query_expansion: bool = True
    attend_to_expansion_tokens: bool = False
    skiplist_words: tuple[str, ...] = tuple(PYLATE_DEFAULTS["skiplist_words"])
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    @property
    def prompt(self) -> str | None:
        """The prompt prepended to every text (sentence-transformers' ``default_prompt_name`` rule)."""
        return self.prompts.get(self.default_prompt_name) if self.default_prompt_name else None

    @classmethod
    def from_checkpoint(cls, path: Path) -> ColBERTSettings:
        """Read ``config_sentence_transformers.json`` and ``sentence_bert_config.json`` from ``path``."""
        config = _read_json(path / "config_sentence_transformers.json", required=False)
        model_type = config.get("model_type")
        if model_type not in (None, "ColBERT"):
            raise CheckpointError(f"{path} is a {model_type!r} sentence-transformers model, not a ColBERT one")
        similarity = config.get("similarity_fn_name")
        if similarity not in (None, "MaxSim", "maxsim"):
            raise CheckpointError(f"{path}: similarity_fn_name {similarity!r} is not MaxSim; mm's ColBERT "
                                  f"encoder only implements late interaction (MaxSim)")
        values = {key: config.get(key, default) for key, default in PYLATE_DEFAULTS.items()}
        values["query_prefix"] = values["query_prefix"] if values["query_prefix"] is not None else "[Q] "
        values["document_prefix"] = values["document_prefix"] if values["document_prefix"] is not None else "[D] "
        for key in ("query_length", "document_length"):
            if not isinstance(values[key], int) or values[key] < 2:
                raise CheckpointError(f"{path}: {key} must be an integer >= 2, got {values[key]!r}")
        if not values["do_query_expansion"]:
            values["attend_to_expansion_tokens"] = False  # pylate: no expansion -> nothing to attend to
        unknown = set(config) - set(PYLATE_DEFAULTS) - _INFORMATIONAL_KEYS
        if unknown:
            raise CheckpointError(f"{path}/config_sentence_transformers.json has setting(s) mm does not "
                                  f"implement: {sorted(unknown)}")
        bert = _read_json(path / "sentence_bert_config.json", required=False)
        prompts = config.get("prompts") or {}
        default_prompt = config.get("default_prompt_name")
        if default_prompt is not None and default_prompt not in prompts:
            raise CheckpointError(f"{path}: default_prompt_name {default_prompt!r} is not one of the prompts "
                                  f"{sorted(prompts)}")
        return cls(
            query_prefix=values["query_prefix"], document_prefix=values["document_prefix"],
            query_length=values["query_length"], document_length=values["document_length"],
            do_query_expansion=bool(values["do_query_expansion"]),
            attend_to_expansion_tokens=bool(values["attend_to_expansion_tokens"]),
            skiplist_words=tuple(values["skiplist_words"] or ()),
            do_lower_case=bool(bert.get("do_lower_case", False)),
            prompts=dict(prompts), default_prompt_name=default_prompt,
        )


def _read_json(path: Path, *, required: bool = True) -> dict:
    if not path.exists():
        if required:
            raise CheckpointError(f"{path} is missing")
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the checkpoint is corrupt") from exc


def is_colbert_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a ColBERT (multi-vector) sentence-transformers checkpoint, judged by its files.

    A ColBERT checkpoint says ``"model_type": "ColBERT"`` in ``config_sentence_transformers.json``, or
    has a Transformer followed by Dense modules and no Pooling module in ``modules.json``.
    """
    path = Path(path)
    config = _read_json(path / "config_sentence_transformers.json", required=False)
    if config.get("model_type") == "ColBERT" or "query_length" in config or "skiplist_words" in config:
        return True
    modules = _read_json(path / "modules.json", required=False) if (path / "modules.json").exists() else []
    types = [m.get("type", "") for m in modules] if isinstance(modules, list) else []
    return bool(types) and any("Dense" in t for t in types) and not any("Pooling" in t for t in types) \
        and any(t.startswith("pylate.") for t in types)


# ----------------------------------------------------------------------------------- projections
class _Projection:
    """One Dense module: ``act(x @ W.T + b)`` (+ residual), as pylate's and sentence-transformers' Dense."""

    def __init__(self, folder: Path) -> None:
        import torch

        config = _read_json(folder / "config.json")
        self.in_features = int(config["in_features"])
        self.out_features = int(config["out_features"])
        self.activation = _activation(config.get("activation_function", "torch.nn.modules.linear.Identity"),
                                      folder)
        self.use_residual = bool(config.get("use_residual", False))
        for key in ("module_input_name", "module_output_name"):
            if config.get(key) not in (None, "token_embeddings"):
                raise CheckpointError(f"{folder}/config.json: {key}={config[key]!r} is not supported "
                                      f"(mm projects token_embeddings)")
        state = _load_state(folder)
        weight = state.get("linear.weight")
        if weight is None or tuple(weight.shape) != (self.out_features, self.in_features):
            raise CheckpointError(f"{folder}: expected linear.weight of shape "
                                  f"{(self.out_features, self.in_features)}, found "
                                  f"{None if weight is None else tuple(weight.shape)}")
        self.weight = weight.to(torch.float32)
        self.bias = state.get("linear.bias") if config.get("bias", True) else None
        if config.get("bias", True) and self.bias is None:
            raise CheckpointError(f"{folder}: config says bias=true but linear.bias is missing")
        self.residual = None
        if self.use_residual and self.in_features != self.out_features:
            self.residual = state.get("residual.weight")
            if self.residual is None:
                raise CheckpointError(f"{folder}: use_residual with different sizes needs residual.weight")

    def to(self, dtype) -> _Projection:
        self.weight = self.weight.to(dtype)
        self.bias = None if self.bias is None else self.bias.to(dtype)
        self.residual = None if self.residual is None else self.residual.to(dtype)
        return self

    def __call__(self, x):
        import torch.nn.functional as F

        out = self.activation(F.linear(x, self.weight, self.bias))
        if self.use_residual:
            out = out + (x if self.residual is None else F.linear(x, self.residual))
        return out


def _activation(name: str, folder: Path) -> Callable:
    """Instantiate a ``torch.nn`` activation named by its full class path (only torch classes are trusted)."""
    if not isinstance(name, str) or not name.startswith("torch."):
        raise CheckpointError(f"{folder}: activation_function {name!r} is not a torch class; mm only loads "
                              f"activations from torch.nn")
    module_name, _, cls_name = name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
        return cls()
    except (ImportError, AttributeError, TypeError) as exc:
        raise CheckpointError(f"{folder}: unknown activation_function {name!r} ({exc})") from exc


def _load_state(folder: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    if (folder / "model.safetensors").exists():
        try:
            return load_file(str(folder / "model.safetensors"))
        except Exception as exc:
            raise CheckpointError(f"{folder}/model.safetensors cannot be read ({exc})") from exc
    if (folder / "pytorch_model.bin").exists():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise CheckpointError(f"{folder} holds no weights (model.safetensors or pytorch_model.bin)")


# ----------------------------------------------------------------------------------- encoder
@dataclass
class _Batch:
    """Token ids (ragged) of a batch and which positions the model attends to."""

    ids: list[list[int]]
    attend: list[list[int]]


class ColBERTEncoder:
    """Token-level (multi-vector) encoder for a ColBERT checkpoint in sentence-transformers format."""

    kind = "multivector"

    def __init__(self, path: Path, backbone, tokenizer, projections: list[_Projection], settings: ColBERTSettings,
                 *, batch_size: int = 32, dtype=None) -> None:
        self.path = path
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.projections = projections
        self.settings = settings
        self.batch_size = batch_size
        self.dtype = dtype
        self.dim = projections[-1].out_features if projections else int(backbone.config.hidden_size)
        self.query_prefix_id = self._prefix_id(settings.query_prefix)
        self.document_prefix_id = self._prefix_id(settings.document_prefix)
        # pylate: queries are expanded with MASK (MLM models) or EOS (LLMs), else the pad token
        tok = tokenizer
        self.expansion_id = next((i for i in (tok.mask_token_id, tok.eos_token_id, tok.pad_token_id)
                                  if i is not None), None)
        if self.expansion_id is None:
            raise CheckpointError(f"{path}: the tokenizer has no MASK, EOS or pad token to pad queries with")
        # the skiplist matches exact token ids (a word that is not one token matches nothing)
        ids = [tok.convert_tokens_to_ids(word) for word in settings.skiplist_words]
        self.skiplist_ids = frozenset(i for i in ids if i is not None)

    def _prefix_id(self, prefix: str) -> int | None:
        if not prefix:
            return None
        token_id = self.tokenizer.convert_tokens_to_ids(prefix)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise CheckpointError(f"{self.path}: the prefix {prefix!r} is not a token of the tokenizer; a ColBERT "
                                  f"checkpoint saved by pylate has its prefixes as added tokens")
        return int(token_id)

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model: str | Path, *, dtype: Any = "float32", batch_size: int = 32,
                        threads: int | None = None) -> ColBERTEncoder:
        """Load a ColBERT checkpoint directory (or HF-cache / hub id).

        >>> ColBERTEncoder.from_pretrained("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mm.errors.ModelNotFoundError: model '/nonexistent' not found: ...
        """
        from mm.models.colbert import load_colbert

        return load_colbert(model, dtype=dtype, batch_size=batch_size, threads=threads)

    # -- public API ----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What an index stores to know which encoder built it."""
        return {"kind": self.kind, "family": "colbert", "model": str(self.path),
                "model_name": getattr(self, "model_name", str(self.path)), "dim": self.dim,
                "query_length": self.settings.query_length, "document_length": self.settings.document_length}

    def encode_queries(self, texts: Sequence[str], *, batch_size: int | None = None,
                       progress: bool = False) -> list[np.ndarray]:
        """One float32 array ``[query_length, dim]`` per query (with expansion; fewer tokens without it)."""
        return self._encode(texts, is_query=True, batch_size=batch_size, progress=progress)

    def encode_documents(self, texts: Sequence[str], *, batch_size: int | None = None,
                         progress: bool = False) -> list[np.ndarray]:
        """One float32 array ``[kept_tokens, dim]`` per document (padding and skiplist tokens removed)."""
        return self._encode(texts, is_query=False, batch_size=batch_size, progress=progress)

    def tokenize(self, texts: Sequence[str], *, is_query: bool) -> _Batch:
        """Token ids and attention flags per text, exactly as pylate builds them (ragged, unpadded)."""
        texts = _check_texts(texts)
        if not texts:
            return _Batch([], [])
        s = self.settings
        prompt = s.prompt
        prepared = [(prompt + t if prompt else t).strip() for t in texts]
        if s.do_lower_case:
            prepared = [t.lower() for t in prepared]
        length = s.query_length if is_query else s.document_length
        prefix_id = self.query_prefix_id if is_query else self.document_prefix_id
        limit = length - 1 if prefix_id is not None else length
        encoded = self.tokenizer(prepared, add_special_tokens=True, truncation=True, max_length=limit,
                                 padding=False, return_attention_mask=False)["input_ids"]
        ids, attend = [], []
        for row in encoded:
            row = list(row)
            if prefix_id is not None:
                row = [*row[:1], prefix_id, *row[1:]]
            mask = [1] * len(row)
            if is_query and s.do_query_expansion:
                pad = length - len(row)
                row += [self.expansion_id] * pad
                mask += [1 if s.attend_to_expansion_tokens else 0] * pad
            ids.append(row)
            attend.append(mask)
        return _Batch(ids, attend)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text has as a document before truncation (for chunking long documents)."""
        texts = _check_texts(texts)
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    @property
    def max_document_tokens(self) -> int:
        """Text tokens a document can hold before truncation (length minus BOS and prefix)."""
        return self.settings.document_length - (2 if self.document_prefix_id is not None else 1)

    # -- internals ------------------------------------------------------------------------------
    threads: int | None = None

    def _encode(self, texts: Sequence[str], *, is_query: bool, batch_size: int | None,
                progress: bool) -> list[np.ndarray]:
        from mm.runtime import scoped_threads

        with scoped_threads(self.threads):
            return self._encode_batches(texts, is_query=is_query, batch_size=batch_size, progress=progress)

    def _encode_batches(self, texts: Sequence[str], *, is_query: bool, batch_size: int | None,
                        progress: bool) -> list[np.ndarray]:
        import torch
        from tqdm.auto import tqdm

        batch = self.tokenize(texts, is_query=is_query)
        size = batch_size or self.batch_size
        if size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {size}")
        order = sorted(range(len(batch.ids)), key=lambda i: -len(batch.ids[i]))
        results: list[np.ndarray | None] = [None] * len(order)
        bar = tqdm(total=len(order), desc="encoding queries" if is_query else "encoding documents",
                   unit="text", disable=not progress)
        with torch.inference_mode():
            for start in range(0, len(order), size):
                chunk = order[start:start + size]
                out = self._forward([batch.ids[i] for i in chunk], [batch.attend[i] for i in chunk], is_query)
                for i, vectors in zip(chunk, out, strict=True):
                    results[i] = vectors
                bar.update(len(chunk))
        bar.close()
        return results  # type: ignore[return-value]

    def _forward(self, ids: list[list[int]], attend: list[list[int]], is_query: bool) -> list[np.ndarray]:
        import torch
        import torch.nn.functional as F

        longest = max(len(row) for row in ids)
        pad_id = self.expansion_id
        input_ids = torch.tensor([row + [pad_id] * (longest - len(row)) for row in ids], dtype=torch.long)
        mask = torch.tensor([m + [0] * (longest - len(m)) for m in attend], dtype=torch.long)
        hidden = self.backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
        for proj in self.projections:
            hidden = proj(hidden)
        outputs = []
        for row, row_ids, row_mask in zip(hidden, ids, attend, strict=True):
            n = len(row_ids)
            if is_query:
                keep = torch.ones(n, dtype=torch.bool) if self.settings.do_query_expansion \
                    else torch.tensor(row_mask, dtype=torch.bool)
            else:
                keep = torch.tensor([m == 1 and t not in self.skiplist_ids for t, m in zip(row_ids, row_mask,
                                                                                            strict=True)])
            kept = F.normalize(row[:n][keep].float(), p=2, dim=1)
            outputs.append(kept.numpy().astype(np.float32, copy=False))
        return outputs


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidInputError("pass a list of texts, not one string (wrap it: [text])")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InvalidInputError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    return texts


# ----------------------------------------------------------------------------------- MaxSim
def maxsim(query: np.ndarray, document: np.ndarray) -> float:
    """Late-interaction score: for each query vector its best dot product over the document, summed.

    >>> q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    >>> d = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    >>> round(maxsim(q, d), 2)
    1.8
    """
    if document.shape[0] == 0:
        return 0.0
    return float((query @ document.T).max(axis=1).sum())


def maxsim_matrix(queries: Sequence[np.ndarray], documents: Sequence[np.ndarray], *,
                  zero_padded: bool = False) -> np.ndarray:
    """Score every query against every document: a ``[n_queries, n_documents]`` float32 matrix.

    ``zero_padded=True`` reproduces pylate's ``colbert_scores`` on zero-padded documents: each query
    token's best score is then at least 0 for a document shorter than the longest one.

    >>> q = [np.array([[1.0, 0.0]], dtype=np.float32)]
    >>> d = [np.array([[-1.0, 0.0]], dtype=np.float32), np.array([[-1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)]
    >>> maxsim_matrix(q, d).tolist(), maxsim_matrix(q, d, zero_padded=True).tolist()
    ([[-1.0, -1.0]], [[0.0, -1.0]])
    """
    longest = max((d.shape[0] for d in documents), default=0)
    scores = np.zeros((len(queries), len(documents)), dtype=np.float32)
    for j, doc in enumerate(documents):
        for i, query in enumerate(queries):
            if doc.shape[0] == 0:
                continue
            best = (query @ doc.T).max(axis=1)
            if zero_padded and doc.shape[0] < longest:
                best = np.maximum(best, 0.0)
            scores[i, j] = best.sum(dtype=np.float32)
    return scores
