"""The ColBERT encoder reproduces pylate's goldens and honours every checkpoint setting."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from mm.encoders.colbert import ColBERTEncoder, is_colbert_checkpoint, maxsim, maxsim_matrix

from mm.errors import CheckpointError, InvalidInputError

pytestmark = pytest.mark.filterwarnings("ignore")


def _bundles(shared):
    found = sorted(p for p in (shared / "fixtures").glob("lfm2_colbert*") if (p / "goldens" / "goldens.json").exists())
    if not found:
        pytest.skip("no LFM2-ColBERT golden bundle under shared/fixtures")
    return found


@pytest.fixture(scope="module")
def golden_runs(shared):
    """Per bundle: goldens, and what mm's encoder produces on the same texts."""
    from safetensors.numpy import load_file

    runs = []
    for bundle in _bundles(shared):
        goldens = json.loads((bundle / "goldens" / "goldens.json").read_text())
        enc = ColBERTEncoder.from_pretrained(bundle / "checkpoint")
        queries = [q["text"] for q in goldens["queries"]]
        documents = [d["text"] for d in goldens["documents"]]
        runs.append({
            "bundle": bundle, "goldens": goldens, "encoder": enc, "queries": queries, "documents": documents,
            "Q": enc.encode_queries(queries), "D": enc.encode_documents(documents),
            "q_gold": load_file(str(bundle / "goldens" / "query_embeddings.safetensors")),
            "d_gold": load_file(str(bundle / "goldens" / "document_embeddings.safetensors")),
            "scores": load_file(str(bundle / "goldens" / "scores.safetensors")),
        })
    return runs


def test_query_tokens_and_embeddings_match_pylate(golden_runs):
    for run in golden_runs:
        enc, gold = run["encoder"], run["q_gold"]
        batch = enc.tokenize(run["queries"], is_query=True)
        np.testing.assert_array_equal(np.array(batch.ids), gold["input_ids"])
        np.testing.assert_array_equal(np.array(batch.attend), gold["attention_mask"])
        for i, q in enumerate(run["Q"]):
            assert q.dtype == np.float32
            assert q.shape == gold["embeddings"][i].shape, (run["bundle"], i)
            assert np.abs(q - gold["embeddings"][i]).max() <= 1e-5, (run["bundle"], i)


def test_document_tokens_kept_mask_and_embeddings_match_pylate(golden_runs):
    for run in golden_runs:
        enc, gold = run["encoder"], run["d_gold"]
        batch = enc.tokenize(run["documents"], is_query=False)
        for i, d in enumerate(run["D"]):
            key = f"doc_{i:03d}"
            np.testing.assert_array_equal(np.array(batch.ids[i]), gold[f"{key}.input_ids"])
            kept = np.array([t not in enc.skiplist_ids for t in batch.ids[i]], dtype=np.uint8)
            np.testing.assert_array_equal(kept, gold[f"{key}.kept_mask"])
            assert d.shape == gold[key].shape, (run["bundle"], key)
            assert np.abs(d - gold[key]).max() <= 1e-5, (run["bundle"], key)
            np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)


def test_scores_and_top3_rankings_match_pylate(golden_runs):
    for run in golden_runs:
        pylate_scores = maxsim_matrix(run["Q"], run["D"], zero_padded=True)
        exact_scores = maxsim_matrix(run["Q"], run["D"])
        assert np.abs(pylate_scores - run["scores"]["maxsim_pylate"]).max() <= 1e-4
        assert np.abs(exact_scores - run["scores"]["maxsim_exact"]).max() <= 1e-4
        ties = run["goldens"].get("top3_tie_groups", [])
        for i, expected in enumerate(run["goldens"]["top3_rerank"]):
            ranked = [int(j) for j in np.argsort(-pylate_scores[i], kind="stable")[:3]]
            if ties and ties[i]:  # exact ties: pylate's order is arbitrary inside a tie group
                assert sorted(ranked) == sorted(h["id"] for h in expected)
            else:
                assert ranked == [h["id"] for h in expected], (run["bundle"], i)


def test_settings_read_back(golden_runs):
    for run in golden_runs:
        ref, s, enc = run["goldens"]["reference_settings"], run["encoder"].settings, run["encoder"]
        assert (s.query_prefix, s.document_prefix) == (ref["query_prefix"], ref["document_prefix"])
        assert (enc.query_prefix_id, enc.document_prefix_id) == (ref["query_prefix_id"], ref["document_prefix_id"])
        assert (s.query_length, s.document_length) == (ref["query_length"], ref["document_length"])
        assert enc.expansion_id == ref["expansion_and_pad_token_id"]
        assert list(s.skiplist_words) == ref["skiplist_words"]


def test_batching_does_not_change_vectors(golden_runs):
    run = golden_runs[0]
    one_by_one = run["encoder"].encode_documents(run["documents"][:6], batch_size=1)
    for a, b in zip(one_by_one, run["D"][:6], strict=True):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5


# ---------------------------------------------------------------- settings of other checkpoints
def _rewrite_config(path, **changes):
    cfg_path = path / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(changes)
    cfg_path.write_text(json.dumps(cfg))


@pytest.fixture()
def ckpt_copy(tiny_colbert, tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_colbert, target)
    return target


def test_tiny_factory_round_trip(tiny_colbert):
    enc = ColBERTEncoder.from_pretrained(tiny_colbert)
    assert is_colbert_checkpoint(tiny_colbert)
    q = enc.encode_queries(["Where does the Rhine flow?"])[0]
    assert q.shape == (16, 128)
    docs = enc.encode_documents(["The Rhine flows through Basel.", "!!!"])
    assert docs[1].shape[0] == 2  # BOS and [D] survive; the three '!' are skiplisted
    assert maxsim(q, docs[0]) == pytest.approx(float((q @ docs[0].T).max(1).sum()), rel=1e-6)


def test_no_query_expansion_keeps_only_real_tokens(ckpt_copy):
    _rewrite_config(ckpt_copy, do_query_expansion=False, attend_to_expansion_tokens=True)
    enc = ColBERTEncoder.from_pretrained(ckpt_copy)
    assert enc.settings.attend_to_expansion_tokens is False  # pylate: nothing to attend to without expansion
    n_real = len(enc.tokenize(["Rhine"], is_query=True).ids[0])
    assert enc.encode_queries(["Rhine"])[0].shape == (n_real, 128)
    assert n_real < 16


def test_attending_to_expansion_tokens_changes_vectors(tiny_colbert, ckpt_copy):
    base = ColBERTEncoder.from_pretrained(tiny_colbert).encode_queries(["Rhine"])[0]
    _rewrite_config(ckpt_copy, attend_to_expansion_tokens=True)
    enc = ColBERTEncoder.from_pretrained(ckpt_copy)
    assert set(enc.tokenize(["Rhine"], is_query=True).attend[0]) == {1}
    other = enc.encode_queries(["Rhine"])[0]
    n_real = sum(ColBERTEncoder.from_pretrained(tiny_colbert).tokenize(["Rhine"], is_query=True).attend[0])
    assert np.allclose(base[:n_real], other[:n_real], atol=1e-6)  # causal: real tokens see no expansion
    assert not np.allclose(base[n_real:], other[n_real:], atol=1e-4)


def test_lengths_truncate_with_prefix_inside_the_limit(ckpt_copy):
    _rewrite_config(ckpt_copy, query_length=8, document_length=10)
    enc = ColBERTEncoder.from_pretrained(ckpt_copy)
    long_text = "word " * 50
    q = enc.tokenize([long_text], is_query=True).ids[0]
    d = enc.tokenize([long_text], is_query=False).ids[0]
    assert len(q) == 8 and len(d) == 10
    assert q[1] == enc.query_prefix_id and d[1] == enc.document_prefix_id
    assert enc.encode_documents([long_text])[0].shape == (10, 128)


def test_empty_prefix_inserts_nothing(ckpt_copy):
    _rewrite_config(ckpt_copy, document_prefix="")
    enc = ColBERTEncoder.from_pretrained(ckpt_copy)
    assert enc.document_prefix_id is None
    ids = enc.tokenize(["Rhine"], is_query=False).ids[0]
    assert ids == enc.tokenizer("Rhine")["input_ids"]


def test_custom_skiplist_and_lower_case(ckpt_copy):
    _rewrite_config(ckpt_copy, skiplist_words=["rhine", "!", "not-a-token-at-all"])
    bert = json.loads((ckpt_copy / "sentence_bert_config.json").read_text())
    (ckpt_copy / "sentence_bert_config.json").write_text(json.dumps({**bert, "do_lower_case": True}))
    enc = ColBERTEncoder.from_pretrained(ckpt_copy)
    assert enc.tokenizer.convert_tokens_to_ids("!") in enc.skiplist_ids
    assert len(enc.skiplist_ids) <= 2  # a word that is not one token matches no id
    upper = enc.tokenize(["RHINE!"], is_query=False).ids[0]
    lower = enc.tokenize(["rhine!"], is_query=False).ids[0]
    assert upper == lower
    assert enc.encode_documents(["rhine!"])[0].shape[0] == len(lower) - 1  # '!' dropped


def test_prompts_are_prepended(ckpt_copy):
    _rewrite_config(ckpt_copy, prompts={"query": "", "document": "", "search": "search: "},
                    default_prompt_name="search")
    enc = ColBERTEncoder.from_pretrained(ckpt_copy)
    ids = enc.tokenize(["Rhine"], is_query=False).ids[0]
    expected = enc.tokenizer("search: Rhine")["input_ids"]
    assert ids == [expected[0], enc.document_prefix_id, *expected[1:]]


def test_sentence_transformers_dense_type_and_residual(ckpt_copy):
    modules = json.loads((ckpt_copy / "modules.json").read_text())
    modules[1]["type"] = "sentence_transformers.models.Dense"
    (ckpt_copy / "modules.json").write_text(json.dumps(modules))
    assert ColBERTEncoder.from_pretrained(ckpt_copy).encode_documents(["Rhine"])[0].shape[1] == 128
    dense_cfg = json.loads((ckpt_copy / "1_Dense" / "config.json").read_text())
    (ckpt_copy / "1_Dense" / "config.json").write_text(json.dumps({**dense_cfg, "use_residual": True}))
    with pytest.raises(CheckpointError, match=r"residual\.weight"):
        ColBERTEncoder.from_pretrained(ckpt_copy)


@pytest.mark.parametrize("change, message", [
    ({"similarity_fn_name": "cosine"}, "MaxSim"),
    ({"model_type": "SentenceTransformer"}, "not a ColBERT"),
    ({"query_length": 1}, "query_length"),
    ({"pool_factor": 2}, "does not implement"),
])
def test_bad_config_is_a_clear_error(ckpt_copy, change, message):
    _rewrite_config(ckpt_copy, **change)
    with pytest.raises(CheckpointError, match=message):
        ColBERTEncoder.from_pretrained(ckpt_copy)


def test_unknown_module_and_corrupt_files(ckpt_copy):
    modules = json.loads((ckpt_copy / "modules.json").read_text())
    (ckpt_copy / "modules.json").write_text(json.dumps([*modules, {"idx": 2, "path": "", "type": "x.Pooling"}]))
    with pytest.raises(CheckpointError, match="not supported"):
        ColBERTEncoder.from_pretrained(ckpt_copy)
    (ckpt_copy / "modules.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ColBERTEncoder.from_pretrained(ckpt_copy)


def test_bad_texts(tiny_colbert):
    enc = ColBERTEncoder.from_pretrained(tiny_colbert)
    with pytest.raises(InvalidInputError, match="list of texts"):
        enc.encode_queries("one string")
    with pytest.raises(InvalidInputError, match="strings"):
        enc.encode_documents(["ok", 3])
    assert enc.encode_documents([]) == []
