"""Shards that share one trained codec (``create_index(codec_from=...)``): their merged top k is one index's."""

from __future__ import annotations

import numpy as np
import pytest
from mm.index import create_index, open_index
from mm.index.shards import search_shards

from mm.errors import IndexFormatError, InvalidInputError
from mm.kernels import late_interaction
from tests.search.test_index_basic import DIM, clustered_docs

INFO = {"model": "synthetic"}


def fill(index, docs, first: int) -> None:
    index.add([f"d{first + i}" for i in range(len(docs))], docs)


def queries(docs: list[np.ndarray], n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for d in rng.choice(len(docs), n, replace=False):
        q = docs[d][: 6] + 0.2 * rng.normal(size=(min(6, len(docs[d])), DIM)).astype(np.float32)
        out.append(q / np.linalg.norm(q, axis=1, keepdims=True))
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Shard 0 trains its own pq codec; shard 1 and the one-index reference share it."""
    root = tmp_path_factory.mktemp("shards")
    docs = clustered_docs(600, seed=3)
    first = create_index(root / "s0", dim=DIM, encoder_info=INFO, nbits=2, codec="pq", train_tokens=3000)
    fill(first, docs[:300], 0)
    second = create_index(root / "s1", dim=DIM, encoder_info=INFO, codec_from=root / "s0")
    assert second.info()["trained"]  # trained before its first add
    fill(second, docs[300:], 300)
    whole = create_index(root / "all", dim=DIM, encoder_info=INFO, codec_from=first)
    fill(whole, docs, 0)
    own = create_index(root / "own", dim=DIM, encoder_info=INFO, nbits=2, codec="pq", train_tokens=3000, seed=7)
    fill(own, docs[300:], 300)
    return docs, [open_index(root / "s0"), open_index(root / "s1")], open_index(root / "all"), open_index(root / "own")


def test_shards_sharing_a_codec_merge_to_the_one_index_top_k(shards):
    docs, parts, whole, _ = shards
    assert whole.config["codec_from"] == str(parts[0].path.resolve())
    assert whole.config["codec"] == "pq" and whole.config["nbits"] == 2
    from_shard = set()
    for q in queries(docs, 20):
        every = {"nrerank": 600, "ncandidates": 600}  # no shortlist cut: both sides score every candidate
        merged, one = search_shards(parts, q, k=10, **every), whole.search(q, k=10, **every)
        assert [h.id for h in merged] == [h.id for h in one]
        np.testing.assert_allclose([h.score for h in merged], [h.score for h in one], rtol=1e-5)
        from_shard |= {int(h.id[1:]) >= 300 for h in merged}
        # default shortlists: each shard's shortlist holds the one index's from that shard, so the
        # merge is never worse
        merged, one = search_shards(parts, q, k=10), whole.search(q, k=10)
        assert all(m.score >= o.score - 1e-5 for m, o in zip(merged, one, strict=True))
    assert from_shard == {True, False}  # the merge interleaves both shards


def test_a_shard_with_its_own_codec_scores_differently(shards):
    docs, parts, _, own = shards
    q = queries(docs[300:], 1, seed=5)[0]
    shared = {h.id: h.score for h in parts[1].search(q, k=5, nrerank=300)}
    alone = {h.id: h.score for h in own.search(q, k=5, nrerank=300)}
    common = set(shared) & set(alone)
    assert common and any(abs(shared[i] - alone[i]) > 1e-4 for i in common)


def test_codec_from_errors(tmp_path, shards):
    _, parts, _, _ = shards
    untrained = create_index(tmp_path / "u", dim=DIM, encoder_info=INFO, train_tokens=10_000)
    fill(untrained, clustered_docs(5), 0)
    with pytest.raises(InvalidInputError, match="no trained codec yet"):
        create_index(tmp_path / "a", dim=DIM, encoder_info=INFO, codec_from=untrained)
    with pytest.raises(InvalidInputError, match="nbits, codec come"):
        create_index(tmp_path / "b", dim=DIM, encoder_info=INFO, codec_from=parts[0], nbits=4, codec="pq")
    with pytest.raises(InvalidInputError, match="holds 32-d vectors"):
        create_index(tmp_path / "c", dim=16, encoder_info=INFO, codec_from=parts[0])
    dense = create_index(tmp_path / "d", kind="dense", dim=DIM, encoder_info=INFO)
    with pytest.raises(InvalidInputError, match="must be a multi-vector index"):
        create_index(tmp_path / "e", dim=DIM, encoder_info=INFO, codec_from=dense.path)
    with pytest.raises(InvalidInputError, match="only apply to multi-vector"):
        create_index(tmp_path / "f", kind="dense", dim=DIM, encoder_info=INFO, codec_from=parts[0])
    with pytest.raises(InvalidInputError, match="nbits only apply to multi-vector"):
        create_index(tmp_path / "g", kind="dense", dim=DIM, encoder_info=INFO, nbits=2)
    with pytest.raises(IndexFormatError):
        create_index(tmp_path / "h", dim=DIM, encoder_info=INFO, codec_from=tmp_path / "nothing-here")
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_segments_stay_under_max_segment_tokens_and_search_the_same(tmp_path, shards):
    """Adds, training, tier merges and compact() never write a compressed segment past the cap."""
    docs, parts, _, _ = shards
    cap = 1_500
    capped = create_index(tmp_path / "capped", dim=DIM, encoder_info=INFO, codec_from=parts[0],
                          max_segment_tokens=cap)
    for s in range(0, len(docs), 10):  # ~170 tokens per add: four merge (below the cap), four of those would not
        fill(capped, docs[s:s + 10], s)
    assert max(e["n_docs"] for e in capped._manifest["segments"]) > 10  # merges still happen below the cap
    capped.delete([f"d{i}" for i in range(0, 600, 7)])
    whole_copy = create_index(tmp_path / "whole", dim=DIM, encoder_info=INFO, codec_from=parts[0])
    fill(whole_copy, docs, 0)
    whole_copy.delete([f"d{i}" for i in range(0, 600, 7)])

    def sizes(index):
        return [int(e["n_tokens"]) for e in open_index(index.path)._manifest["segments"]]

    for step in ("adds", "compact"):
        got = sizes(capped)
        assert len(got) > 2 and max(got) <= cap, (step, got)
        for q in queries(docs, 10, seed=2):
            every = {"nrerank": 600, "ncandidates": 600}
            a, b = capped.search(q, k=10, **every), whole_copy.search(q, k=10, **every)
            assert [h.id for h in a] == [h.id for h in b]
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5)
        capped.compact()
    untrained = create_index(tmp_path / "u", dim=DIM, encoder_info=INFO, train_tokens=3000, max_segment_tokens=cap)
    for s in range(0, 300, 100):
        fill(untrained, docs[s:s + 100], s)  # the third add trains: all 300 documents, split at the cap
    got = sizes(untrained)
    assert untrained.info()["trained"] and len(got) >= 3 and max(got) <= cap, got
    with pytest.raises(InvalidInputError, match="max_segment_tokens must be a positive integer"):
        create_index(tmp_path / "bad", dim=DIM, encoder_info=INFO, max_segment_tokens=0)


def test_a_shared_codec_shard_is_not_told_to_retrain_for_outgrowing_the_sample(tmp_path, shards):
    docs = shards[0]
    small = create_index(tmp_path / "small", dim=DIM, encoder_info=INFO, nbits=2, train_tokens=300)
    fill(small, docs[:20], 0)  # trains on ~340 tokens
    shard = create_index(tmp_path / "big", dim=DIM, encoder_info=INFO, codec_from=small)
    fill(shard, docs[20:], 20)  # ~30x the codec's training tokens
    drift = shard.info()["drift"]
    assert drift["token_growth"] > 8 and not any("grew" in r for r in drift["reasons"])
    alone = create_index(tmp_path / "alone", dim=DIM, encoder_info=INFO, nbits=2, train_tokens=300)
    fill(alone, docs[:20], 0)
    fill(alone, docs[20:], 20)
    assert any("grew" in r for r in alone.info()["drift"]["reasons"])


def test_a_batch_on_threads_answers_as_one_query_at_a_time(shards):
    """search_batch serves its queries on torch's thread count of threads: same hits, stage times summed."""
    import torch

    docs, _, whole, _ = shards
    qs = queries(docs, 12, seed=4)
    one_by_one = [whole.search(q, k=5) for q in qs]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        batch = whole.search_batch(qs, k=5)
        timed, stages = whole.search_timed(qs, k=5)
    finally:
        torch.set_num_threads(before)
    for got in (batch, timed):
        assert [[h.id for h in hs] for hs in got] == [[h.id for h in hs] for hs in one_by_one]
        # the batch runs each query on one thread, a single query on all: sums may round differently
        np.testing.assert_allclose([h.score for hs in got for h in hs], [h.score for hs in one_by_one for h in hs],
                                   rtol=1e-6)
    # the native kernel takes each document's maxima inside the lookup; the torch path times them apart
    assert stages["lookup"] > 0 and (late_interaction.available() or stages["maxsim"] > 0)
