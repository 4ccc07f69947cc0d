"""Mimi codec: strict loading of the moshi-keyed file, golden full decodes, streaming == full decode."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
import torch
from mm.encoders.mimi import (
    MIMI_CONFIG_FILENAME,
    MIMI_FILENAME,
    MimiCodec,
    check_moshi_keys,
    hf_to_moshi_state_dict,
    load_mimi,
    mimi_config,
    moshi_to_hf_state_dict,
    random_mimi_state_dict,
    tiny_mimi_config,
    write_mimi_checkpoint,
)

from mm.errors import CheckpointError, InvalidInputError, ModelNotFoundError
from tests.conftest import find_shared

REPO = Path(__file__).resolve().parents[2]
FIXTURE = "fixtures/lfm2_audio_tiny"
GOLDEN_CASES = [("seq.mimi_codes", "seq.mimi_wave_full"), ("inter.mimi_codes", "inter.mimi_wave_full"),
                ("mimi_fixed.codes", "mimi_fixed.wave_full")]


@pytest.fixture(scope="session")
def mimi_fixture() -> Path:
    root = find_shared(FIXTURE)
    if root is None:
        pytest.skip(f"shared fixtures not found at {REPO.parent / 'shared'} or $MM_SHARED_DIR")
    return root / FIXTURE


@pytest.fixture(scope="session")
def golden_codec(mimi_fixture: Path) -> MimiCodec:
    return load_mimi(mimi_fixture / "checkpoint")


@pytest.fixture(scope="session")
def mimi_goldens(mimi_fixture: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(mimi_fixture / "goldens.safetensors"))


@pytest.fixture(scope="session")
def random_dir(tmp_path_factory) -> Path:
    """A random tiny Mimi checkpoint written by the factory (independent of the shared fixtures)."""
    directory = tmp_path_factory.mktemp("mimi_random")
    write_mimi_checkpoint(directory, tiny_mimi_config(), seed=3)
    return directory


@pytest.fixture(scope="session")
def random_codec(random_dir: Path) -> MimiCodec:
    return load_mimi(random_dir)


def _frame_by_frame(codec: MimiCodec, codes: torch.Tensor) -> torch.Tensor:
    stream = codec.stream()
    return torch.cat([stream.decode_frame(codes[:, t]) for t in range(codes.shape[1])])


# ------------------------------------------------------------------------------ goldens


@pytest.mark.parametrize(("codes_key", "wave_key"), GOLDEN_CASES)
def test_full_decode_reproduces_official_goldens(golden_codec, mimi_goldens, codes_key, wave_key):
    codes, golden = mimi_goldens[codes_key], mimi_goldens[wave_key]
    wave = golden_codec.decode(codes)
    assert wave.dtype == torch.float32 and wave.shape == (codes.shape[1] * 1920,) == golden.shape
    assert (wave - golden).abs().max().item() < 1e-5  # acceptance is 1e-4; we measure ~1e-6


@pytest.mark.parametrize(("codes_key", "wave_key"), GOLDEN_CASES)
def test_frame_by_frame_equals_full_on_goldens(golden_codec, mimi_goldens, codes_key, wave_key):
    codes, golden = mimi_goldens[codes_key], mimi_goldens[wave_key]
    streamed = _frame_by_frame(golden_codec, codes)
    assert (streamed - golden_codec.decode(codes)).abs().max().item() < 1e-5
    assert (streamed - golden).abs().max().item() < 1e-4


def test_transformers_reference_decode_matches_goldens(golden_codec, mimi_goldens):
    codes, golden = mimi_goldens["mimi_fixed.codes"], mimi_goldens["mimi_fixed.wave_full"]
    assert (golden_codec.reference_decode(codes) - golden).abs().max().item() < 1e-5


def test_codec_facts(golden_codec):
    assert (golden_codec.sample_rate, golden_codec.frame_size, golden_codec.num_codebooks) == (24000, 1920, 8)
    assert golden_codec.codebook_size == 2048


# ------------------------------------------------------------------------------ streaming


def test_streaming_past_the_sliding_context(random_codec):
    """270 frames = 540 transformer steps, more than twice the 250-step context."""
    codes = torch.randint(0, 2048, (8, 270), generator=torch.Generator().manual_seed(0))
    full = random_codec.decode(codes)
    reference = random_codec.reference_decode(codes)  # transformers' own sliding-window mask
    streamed = _frame_by_frame(random_codec, codes)
    assert full.abs().max().item() > 0.1  # the random codec makes real (non-silent) audio
    assert (full - reference).abs().max().item() < 1e-4
    assert (streamed - full).abs().max().item() < 1e-4


def test_chunked_decode_equals_full(random_codec):
    codes = torch.randint(0, 2048, (8, 160), generator=torch.Generator().manual_seed(1))
    full = random_codec.decode(codes)
    stream = random_codec.stream()
    by_three = torch.cat([stream.decode_frames(codes[:, i: i + 3]) for i in range(0, 160, 3)])
    assert (by_three - full).abs().max().item() < 1e-4
    stream.reset()
    bounds = [0, 1, 2, 7, 8, 40, 41, 160]  # uneven chunks, with one single frame and a long one
    uneven = torch.cat([stream.decode_frames(codes[:, a:b]) for a, b in itertools.pairwise(bounds)])
    assert (uneven - full).abs().max().item() < 1e-4
    assert stream.frames_decoded == 160


def test_reset_starts_a_new_stream(random_codec):
    codes = torch.randint(0, 2048, (8, 6), generator=torch.Generator().manual_seed(2))
    stream = random_codec.stream()
    first = stream.decode_frames(codes)
    continued = stream.decode_frames(codes)
    stream.reset()
    again = stream.decode_frames(codes)
    assert torch.equal(first, again)
    assert (continued - first).abs().max().item() > 1e-3  # history matters


def test_outputs_are_ordinary_tensors(random_codec):
    """Calls inside and outside inference mode mix, and the returned audio can be modified in place."""
    codes = torch.randint(0, 2048, (8, 4), generator=torch.Generator().manual_seed(12))
    stream = random_codec.stream()
    with torch.inference_mode():
        first = stream.decode_frames(codes[:, :2])
    rest = stream.decode_frames(codes[:, 2:])
    rest.mul_(0.5)
    assert (torch.cat([first, rest * 2]) - random_codec.decode(codes)).abs().max().item() < 1e-5


def test_streams_are_independent(random_codec):
    codes = torch.randint(0, 2048, (8, 5), generator=torch.Generator().manual_seed(4))
    a, b = random_codec.stream(), random_codec.stream()
    out_a = [a.decode_frame(codes[:, t]) for t in range(5)]
    out_b = [b.decode_frame(codes[:, t]) for t in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(out_a, out_b, strict=True))


def test_empty_decode(random_codec):
    assert random_codec.decode(torch.zeros(8, 0, dtype=torch.long)).shape == (0,)
    assert random_codec.stream().decode_frames(torch.zeros(8, 0, dtype=torch.long)).shape == (0,)


def test_bfloat16_codec_is_close(random_dir, random_codec):
    codes = torch.randint(0, 2048, (8, 4), generator=torch.Generator().manual_seed(5))
    codec16 = load_mimi(random_dir, dtype="bfloat16")
    assert codec16.dtype == torch.bfloat16 and codec16 is not random_codec
    wave16, wave32 = codec16.decode(codes), random_codec.decode(codes)
    assert wave16.dtype == torch.float32
    assert (wave16 - wave32).abs().max().item() < 0.1 * wave32.abs().max().item()
    assert (codec16.stream().decode_frames(codes) - wave16).abs().max().item() < 0.05 * wave32.abs().max().item()


# ------------------------------------------------------------------------------ bad codes


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (torch.full((8, 3), 2048), "end-of-audio"),
        (torch.tensor([[5] * 3] * 7 + [[2048, 1, 1]]), "end-of-audio"),
        (torch.full((8, 3), 2049), r"0\.\.2047"),
        (torch.full((8, 3), -1), r"0\.\.2047"),
        (torch.zeros(7, 3, dtype=torch.long), "shape"),
        (torch.zeros(8, dtype=torch.long), "shape"),
        (torch.zeros(1, 8, 3, dtype=torch.long), "shape"),
        (torch.zeros(8, 3), "integers"),
        ("not codes", "integer tensor"),
    ],
)
def test_bad_codes_are_rejected(random_codec, codes, message):
    with pytest.raises(InvalidInputError, match=message):
        random_codec.decode(codes)


def test_bad_frame_is_rejected(random_codec):
    stream = random_codec.stream()
    with pytest.raises(InvalidInputError, match="shape"):
        stream.decode_frame(torch.zeros(8, 1, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="end-of-audio"):
        stream.decode_frame(torch.tensor([2048] * 8))
    with pytest.raises(InvalidInputError, match=r"0\.\.2047"):
        stream.decode_frames(torch.full((8, 2), 4096))
    assert stream.frames_decoded == 0  # rejected input leaves the state untouched


def test_numpy_and_int32_codes_are_accepted(random_codec):
    import numpy as np

    codes = torch.randint(0, 2048, (8, 2), generator=torch.Generator().manual_seed(6))
    expected = random_codec.decode(codes)
    assert torch.equal(random_codec.decode(codes.numpy().astype(np.int32)), expected)
    assert torch.equal(random_codec.decode(codes.to(torch.int32)), expected)


# ------------------------------------------------------------------------------ loader


def _copy_checkpoint(source: Path, target: Path, edit) -> Path:
    from safetensors.torch import load_file, save_file

    target.mkdir()
    state = load_file(str(source / MIMI_FILENAME))
    edit(state)
    save_file(state, str(target / MIMI_FILENAME))
    shutil.copy(source / MIMI_CONFIG_FILENAME, target / MIMI_CONFIG_FILENAME)
    return target


def test_misnamed_key_is_reported(random_dir, tmp_path):
    bad = "decoder.model.3.block.1.conv.conv.weight"

    def rename(state):
        state["decoder.model.3.block.1.conv.conv.weights"] = state.pop(bad)

    directory = _copy_checkpoint(random_dir, tmp_path / "ckpt", rename)
    with pytest.raises(CheckpointError) as info:
        load_mimi(directory)
    text = str(info.value)
    assert f"missing 1: {bad}" in text
    assert "unexpected 1: decoder.model.3.block.1.conv.conv.weights" in text


def test_missing_codebook_and_wrong_shape_are_reported(random_dir, tmp_path):
    def corrupt(state):
        del state["quantizer.rvq_rest.vq.layers.30._codebook.embedding_sum"]
        state["decoder_transformer.transformer.layers.1.linear1.weight"] = torch.zeros(65, 32)

    directory = _copy_checkpoint(random_dir, tmp_path / "ckpt", corrupt)
    with pytest.raises(CheckpointError) as info:
        load_mimi(directory)
    text = str(info.value)
    assert "quantizer.rvq_rest.vq.layers.30._codebook.embedding_sum" in text
    assert "decoder_transformer.transformer.layers.1.linear1.weight [65, 32] (expected [64, 32])" in text


def test_extra_key_is_reported(random_dir, tmp_path):
    def extra(state):
        state["decoder.model.99.conv.conv.weight"] = torch.zeros(1)

    with pytest.raises(CheckpointError, match=r"unexpected 1: decoder\.model\.99"):
        load_mimi(_copy_checkpoint(random_dir, tmp_path / "ckpt", extra))


def test_config_mismatch_is_reported(random_dir, tmp_path):
    """A real-size config against a tiny file: every shape is wrong, and the error says what to do."""
    directory = tmp_path / "ckpt"
    directory.mkdir()
    shutil.copy(random_dir / MIMI_FILENAME, directory / MIMI_FILENAME)
    with pytest.raises(CheckpointError, match=MIMI_CONFIG_FILENAME):
        load_mimi(directory)


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / MIMI_FILENAME).write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_mimi(tmp_path / "corrupt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=MIMI_FILENAME):
        load_mimi(tmp_path / "empty")
    with pytest.raises(ModelNotFoundError):
        load_mimi(tmp_path / "does-not-exist")
    (tmp_path / "badcfg").mkdir()
    for text in ("{not json", '{"hidden_size": "wide"}', '{"num_semantic_quantizers": 40}'):
        (tmp_path / "badcfg" / MIMI_CONFIG_FILENAME).write_text(text)
        with pytest.raises(CheckpointError, match="MimiConfig"):
            mimi_config(tmp_path / "badcfg")


def test_loader_is_cached(random_dir, random_codec):
    assert load_mimi(random_dir) is random_codec
    assert load_mimi(random_dir / MIMI_FILENAME) is random_codec  # the file itself is accepted too


def test_real_config_defaults_and_layout():
    """Without mimi_config.json the real Mimi is built in; its moshi layout has the 318 keys of the real file."""
    config = mimi_config(None)
    assert (config.hidden_size, config.num_filters, config.num_hidden_layers, config.codebook_dim) == (512, 64, 8, 256)
    assert (config.frame_size, config.sampling_rate, config.sliding_window, config.num_quantizers) == (1920, 24000, 250, 32)
    from mm.encoders.mimi import _meta_model

    names = hf_to_moshi_state_dict(_meta_model(config).state_dict(), config)
    assert len(names) == 318
    check_moshi_keys({k: tuple(v.shape) for k, v in names.items()}, config)


def test_fixture_file_layout_is_the_official_one(mimi_fixture):
    """The tiny official file and the factory's file have the same key set (198 keys)."""
    from safetensors import safe_open

    config = mimi_config(mimi_fixture / "checkpoint")
    with safe_open(str(mimi_fixture / "checkpoint" / MIMI_FILENAME), "pt") as handle:
        official = set(handle.keys())
    assert official == set(random_mimi_state_dict(config))


def test_key_mapping_round_trip():
    config = tiny_mimi_config(num_attention_heads=2, num_key_value_heads=2, head_dim=16)
    moshi = random_mimi_state_dict(config, seed=7)
    back = hf_to_moshi_state_dict(moshi_to_hf_state_dict(moshi, config), config)
    assert back.keys() == moshi.keys()
    assert all(torch.equal(back[k], moshi[k]) for k in moshi)


def test_factory_checkpoint_matches_transformers_model(random_dir, random_codec):
    """Loading through the moshi names gives the same decode as transformers' MimiModel fed the HF names."""
    from safetensors.torch import load_file
    from transformers import MimiModel

    config = mimi_config(random_dir)
    model = MimiModel(config).eval()
    hf = moshi_to_hf_state_dict(load_file(str(random_dir / MIMI_FILENAME)), config)
    model.load_state_dict(hf, strict=True)
    codes = torch.randint(0, 2048, (8, 5), generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        expected = model.decode(codes[None]).audio_values.reshape(-1)
    assert (random_codec.decode(codes) - expected).abs().max().item() < 1e-5


# ------------------------------------------------------------------------------ encode


def test_encode(random_codec):
    wave = torch.sin(torch.arange(5000) / 7.0) * 0.5
    codes = random_codec.encode(wave)
    assert codes.shape == (8, 3) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 2048
    assert torch.equal(random_codec.encode(wave.numpy()), codes)
    assert random_codec.decode(codes).shape == (3 * 1920,)
    for bad, message in [(torch.zeros(0), "empty"), (torch.zeros(2, 100), "1-D"),
                         (torch.tensor([0.0, float("nan")]), "NaN")]:
        with pytest.raises(InvalidInputError, match=message):
            random_codec.encode(bad)


# ------------------------------------------------------------------------------ full size


def test_from_state_dict_equals_file_load(random_dir, random_codec):
    from safetensors.torch import load_file

    state = load_file(str(random_dir / MIMI_FILENAME))
    codec = MimiCodec.from_state_dict(state, mimi_config(random_dir))
    codes = torch.randint(0, 2048, (8, 3), generator=torch.Generator().manual_seed(9))
    assert torch.equal(codec.decode(codes), random_codec.decode(codes))
    assert torch.equal(codec.encode(torch.ones(1920) * 0.1), random_codec.encode(torch.ones(1920) * 0.1))


@pytest.mark.slow
def test_full_size_streaming_equals_full_decode():
    """The real Mimi configuration (random weights): frame by frame == full == transformers."""
    config = mimi_config(None)
    codec = MimiCodec.from_state_dict(random_mimi_state_dict(config, seed=11), config)
    codes = torch.randint(0, 2048, (8, 10), generator=torch.Generator().manual_seed(10))
    full = codec.decode(codes)
    assert full.shape == (10 * 1920,) and 0.01 < full.abs().max().item() < 100
    assert (_frame_by_frame(codec, codes) - full).abs().max().item() < 1e-4
    assert (codec.reference_decode(codes) - full).abs().max().item() < 1e-4
