"""Our decoding loop, token-exact with transformers' `generate`.

Until our own SpeechEncoderDecoderModel drives it (tests/test_generate_parity.py), the loop is tested here in
isolation: `HFAdapter` exposes a tiny transformers SpeechEncoderDecoderModel through exactly the protocol the
loop uses (`encode`, `decoder(..., cache=...)`, `decoder.new_cache()` with seq_len / reorder / expand), so
both sides compute identical logits and any difference in tokens is a difference in decoding.

Random tiny models rarely say EOS and ignore their input, so the vocabulary is small (V=12), the weights are
larger than transformers' init and the EOS logit is boosted (`make_lively`): beams end at many different
lengths, which is what exercises the beam bookkeeping. Seeds were checked to give no exact score ties.
"""

from types import SimpleNamespace

import pytest
import torch
from transformers import (
    BertConfig,
    GPT2Config,
    SpeechEncoderDecoderConfig,
    SpeechEncoderDecoderModel,
    Wav2Vec2Config,
)
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from minispeechseq.generation import GenerationConfig, generate
from tests.utils import assert_close

SEQ_SCORE_ATOL = 1e-4  # the bar for sequences_scores (sums of up to 20 log-probs in fp32)
START, EOS, PAD = 1, 2, 3
V = 12


class HFCache:
    """transformers' EncoderDecoderCache behind our DecoderCache protocol."""

    def __init__(self):
        self.inner = EncoderDecoderCache(DynamicCache(), DynamicCache())

    @property
    def seq_len(self) -> int:
        return self.inner.get_seq_length()

    def reorder(self, index):
        self.inner.reorder_cache(index)

    def expand(self, n):
        self.inner.batch_repeat_interleave(n)


class HFDecoder:
    def __init__(self, hf):
        self.hf = hf

    def new_cache(self):
        return HFCache()

    def __call__(self, input_ids, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                 cache=None, logits_to_keep=1):
        # Our loop passes one encoder row per utterance for its adjacent beams/samples; transformers' decoder
        # wants one per row.
        rows = input_ids.shape[0] // encoder_hidden_states.shape[0]
        encoder_hidden_states = encoder_hidden_states.repeat_interleave(rows, dim=0)
        if encoder_attention_mask is not None:
            encoder_attention_mask = encoder_attention_mask.repeat_interleave(rows, dim=0)
        out = self.hf.decoder(input_ids=input_ids, attention_mask=attention_mask,
                              encoder_hidden_states=encoder_hidden_states,
                              encoder_attention_mask=encoder_attention_mask, past_key_values=cache.inner, use_cache=True)
        return SimpleNamespace(logits=out.logits[:, -logits_to_keep:])


class HFAdapter:
    """A transformers SpeechEncoderDecoderModel seen through our model protocol."""

    def __init__(self, hf, generation_config=None):
        self.hf = hf
        self.config = hf.config
        self.decoder = HFDecoder(hf)
        self.generation_config = generation_config
        dec = hf.config.decoder
        self.max_target_positions = getattr(dec, "n_positions", None) or dec.max_position_embeddings

    def get_encoder(self):
        return self.hf.encoder

    def encode(self, input_values=None, attention_mask=None, encoder_outputs=None):
        if encoder_outputs is None:
            encoder_outputs = self.hf.encoder(input_values, attention_mask=attention_mask)
        hidden = encoder_outputs[0]
        if getattr(self.hf, "enc_to_dec_proj", None) is not None:
            hidden = self.hf.enc_to_dec_proj(hidden)
        mask = None
        if attention_mask is not None:
            mask = self.hf.encoder._get_feature_vector_attention_mask(hidden.shape[1], attention_mask)
        return hidden, mask


def tiny_encoder_config():
    return Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
        conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer", vocab_size=V,
    )


def build(decoder: str, seed: int = 0, tmp_path=None):
    torch.manual_seed(seed)
    if decoder == "gpt2":
        dec = GPT2Config(vocab_size=V, n_embd=24, n_layer=2, n_head=2, n_positions=64, add_cross_attention=True,
                         is_decoder=True, bos_token_id=START, eos_token_id=EOS, pad_token_id=PAD)
        ids = {"decoder_start_token_id": START, "eos_token_id": EOS, "pad_token_id": PAD}
    else:  # BERT: pad id 0, the case where transformers' beam search pads with EOS (see test_bert_pad_zero)
        dec = BertConfig(vocab_size=V, hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=64, is_decoder=True, add_cross_attention=True, pad_token_id=0)
        ids = {"decoder_start_token_id": START, "eos_token_id": EOS, "pad_token_id": 0}
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(tiny_encoder_config(), dec)
    for k, v in ids.items():
        setattr(config, k, v)
    hf = SpeechEncoderDecoderModel(config=config).eval()
    make_lively(hf, decoder)
    for k, v in ids.items():
        setattr(hf.generation_config, k, v)
    gen = None
    if tmp_path is not None:  # read our GenerationConfig from the file transformers writes
        hf.save_pretrained(tmp_path)
        gen = GenerationConfig.from_pretrained(tmp_path)
    return hf, HFAdapter(hf, gen)


def make_lively(hf, decoder: str, eos_boost: float = 5.0):
    """transformers' init (std 0.02) makes a tiny model say the same token whatever the audio. Larger weights
    make the output depend on the audio, and a boost of the EOS logit makes sequences end at varied steps."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.dim() > 1 and "norm" not in name:
                p.normal_(0.0, 0.6)
        if decoder == "gpt2":  # no output bias: shift ln_f's bias and align EOS's (tied) embedding with it
            b = torch.randn(hf.decoder.transformer.ln_f.bias.shape)
            hf.decoder.transformer.ln_f.bias.copy_(b)
            hf.decoder.transformer.wte.weight[EOS] += eos_boost * b / b.dot(b)
        else:
            hf.decoder.cls.predictions.bias[EOS] += eos_boost / 2


def audio(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1200, generator=g)
    mask = torch.ones(batch, 1200, dtype=torch.long)
    mask[1:, 700:] = 0  # utterances after the first are padded
    x[mask == 0] = 0.0
    return x, mask


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return build("gpt2", seed=0, tmp_path=tmp_path_factory.mktemp("gpt2"))


def both(pair, x, mask, **kw):
    hf, ours = pair
    ref = hf.generate(x, attention_mask=mask, **kw)
    got = generate(ours, x, mask, **kw)
    return got, ref


def assert_tokens(got, ref, what):
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} vs transformers {tuple(ref.shape)}\n{got}\n{ref}"
    assert torch.equal(got, ref), f"{what}: tokens differ\nours\n{got}\ntransformers\n{ref}"


# ------------------------------------------------------------------------------------------ greedy
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy(gpt2, seed):
    x, mask = audio(3, seed)
    got, ref = both(gpt2, x, mask, max_new_tokens=15)
    assert_tokens(got, ref, f"greedy, seed {seed}")


def test_greedy_default_length_from_generation_config_file(gpt2):
    x, mask = audio(2, 5)
    got, ref = both(gpt2, x, mask)  # no length given: 20 new tokens, as transformers
    assert_tokens(got, ref, "greedy with default lengths")


@pytest.mark.parametrize(
    "kw",
    [
        {"no_repeat_ngram_size": 2},
        {"repetition_penalty": 1.5},
        {"min_new_tokens": 8, "max_new_tokens": 12},
        {"min_length": 6, "max_length": 10, "forced_eos_token_id": EOS},
        {"forced_bos_token_id": 7, "suppress_tokens": [4, 5]},
        {"bad_words_ids": [[6], [8, 9]], "eos_token_id": [EOS, 10]},
    ],
    ids=lambda kw: ",".join(kw),
)
def test_greedy_token_control(gpt2, kw):
    x, mask = audio(2, 3)
    kw = {"max_new_tokens": 14, **kw}
    got, ref = both(gpt2, x, mask, **kw)
    assert_tokens(got, ref, f"greedy {kw}")


# -------------------------------------------------------------------------------------------- beams
# Every pair of (num_beams, length_penalty, early_stopping) values occurs once: 9 cases instead of 27.
BEAM_CASES = [(2, 0.5, True), (2, 1.0, False), (2, 2.0, "never"), (3, 0.5, False), (3, 1.0, "never"),
              (3, 2.0, True), (5, 0.5, "never"), (5, 1.0, True), (5, 2.0, False)]


@pytest.mark.parametrize("num_beams, length_penalty, early_stopping", BEAM_CASES)
def test_beam_search(gpt2, num_beams, length_penalty, early_stopping):
    x, mask = audio(2, num_beams)
    kw = {"num_beams": num_beams, "length_penalty": length_penalty, "early_stopping": early_stopping,
              "num_return_sequences": min(2, num_beams), "max_new_tokens": 12}
    hf, ours = gpt2
    ref = hf.generate(x, attention_mask=mask, return_dict_in_generate=True, output_scores=True, **kw)
    got = generate(ours, x, mask, return_dict=True, **kw)
    assert_tokens(got.sequences, ref.sequences, f"beam search {kw}")
    assert_close(got.sequences_scores, ref.sequences_scores, SEQ_SCORE_ATOL, f"sequences_scores {kw}")


@pytest.mark.parametrize(
    "kw",
    [{"no_repeat_ngram_size": 2}, {"repetition_penalty": 1.3, "min_new_tokens": 5}, {"forced_bos_token_id": 7}],
    ids=lambda kw: ",".join(kw),
)
def test_beam_search_token_control(gpt2, kw):
    x, mask = audio(2, 4)
    got, ref = both(gpt2, x, mask, num_beams=3, num_return_sequences=3, max_new_tokens=12, **kw)
    assert_tokens(got, ref, f"beam search {kw}")


def test_bert_pad_zero(tmp_path):
    """BERT's pad id is 0. transformers' beam search computes its fill value as `pad_token_id or eos_token_id`,
    so a pad id of 0 (falsy) fills finished rows with EOS: a bug. Ours pads with pad_token_id; we compare after
    mapping transformers' post-EOS fill to pad, and check that the rest is identical."""
    pair = build("bert", seed=1, tmp_path=tmp_path)
    x, mask = audio(2, 1)
    got, ref = both(pair, x, mask, num_beams=3, num_return_sequences=3, max_new_tokens=12)
    assert got.shape == ref.shape, f"shape {tuple(got.shape)} vs transformers {tuple(ref.shape)}"
    after_eos = (ref == EOS).int().cumsum(1) - (ref == EOS).int() > 0  # strictly after the first EOS
    assert after_eos.any(), "this seed should produce rows that end before the others"
    assert torch.equal(got, ref.masked_fill(after_eos, 0)), f"ours\n{got}\ntransformers (mapped)\n{ref}"
    got, ref = both(pair, x, mask, max_new_tokens=12)  # greedy pads with pad_token_id in transformers too
    assert_tokens(got, ref, "BERT greedy")


# ----------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize(
    "seed, kw",
    [(0, {}), (1, {"temperature": 0.7, "top_k": 5}), (2, {"top_p": 0.8}), (3, {"temperature": 1.5, "top_k": 6, "top_p": 0.9})],
    ids=["plain", "temperature,top_k", "top_p", "all"],
)
def test_sampling_same_seed_as_transformers(gpt2, seed, kw):
    hf, ours = gpt2
    x, mask = audio(2, seed)
    kw = dict(do_sample=True, max_new_tokens=12, num_return_sequences=2, **kw)
    torch.manual_seed(seed)
    ref = hf.generate(x, attention_mask=mask, **kw)
    torch.manual_seed(seed)
    got = generate(ours, x, mask, **kw)
    assert_tokens(got, ref, f"sampling seed {seed} {kw}")


# --------------------------------------------------------------------------------------- invariants
def test_top_k_1_is_greedy(gpt2):
    x, mask = audio(2, 6)
    greedy = generate(gpt2[1], x, mask, max_new_tokens=12)
    sampled = generate(gpt2[1], x, mask, max_new_tokens=12, do_sample=True, top_k=1, generator=torch.Generator().manual_seed(3))
    assert_tokens(sampled, greedy, "top_k=1 vs greedy")


def test_generator_reproducible(gpt2):
    x, mask = audio(2, 7)
    runs = [generate(gpt2[1], x, mask, max_new_tokens=12, do_sample=True, generator=torch.Generator().manual_seed(11))
            for _ in range(2)]
    assert_tokens(runs[0], runs[1], "same generator seed")


def test_one_beam_is_greedy(gpt2):
    from minispeechseq.generation.logits_process import build_processors
    from minispeechseq.generation.loop import _beam_loop
    from minispeechseq.generation.settings import resolve_config

    _hf, ours = gpt2
    x, mask = audio(2, 8)
    greedy = generate(ours, x, mask, max_new_tokens=12)
    # num_beams=1 normally means greedy; drive the beam bookkeeping with one beam directly.
    s = resolve_config(ours, None, {"max_new_tokens": 12, "early_stopping": "never", "length_penalty": 0.0},
                       batch=2, decoder_input_ids=None, device=x.device)
    enc, enc_mask = ours.encode(x, mask)

    def next_scores(ids, cache):
        feed = ids[:, -1:] if cache.seq_len else ids
        return ours.decoder(feed, encoder_hidden_states=enc, encoder_attention_mask=enc_mask, cache=cache).logits[:, -1], cache

    beams, _ = _beam_loop(s, build_processors(s.config, s.max_length, s.min_length), next_scores,
                          ours.decoder.new_cache(), None, None)
    assert_tokens(beams, greedy, "one beam vs greedy")


@pytest.mark.parametrize("kw", [{}, {"num_beams": 3, "num_return_sequences": 2}], ids=["greedy", "beams"])
def test_cache_on_off_identical(gpt2, kw):
    x, mask = audio(2, 9)
    on = generate(gpt2[1], x, mask, max_new_tokens=12, **kw)
    off = generate(gpt2[1], x, mask, max_new_tokens=12, use_cache=False, **kw)
    assert_tokens(off, on, f"use_cache=False vs True {kw}")


def test_return_dict_scores_greedy(gpt2):
    hf, ours = gpt2
    x, mask = audio(2, 10)
    ref = hf.generate(x, attention_mask=mask, max_new_tokens=8, return_dict_in_generate=True, output_scores=True)
    got = generate(ours, x, mask, max_new_tokens=8, return_dict=True)
    assert len(got.scores) == len(ref.scores), f"{len(got.scores)} score steps vs {len(ref.scores)}"
    for step, (a, b) in enumerate(zip(got.scores, ref.scores)):
        assert_close(a, b, 1e-5, f"processed scores, step {step}")


# -------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kw, name",
    [
        ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
        ({"do_sample": True, "top_p": 1.5}, "top_p"),
        ({"do_sample": True, "top_p": 0.0}, "top_p"),
        ({"do_sample": True, "temperature": 0.0}, "temperature"),
        ({"max_new_tokens": 500}, "max_new_tokens"),
        ({"num_beamz": 2}, "num_beamz"),
        ({"early_stopping": "sometimes"}, "early_stopping"),
    ],
)
def test_bad_input(gpt2, kw, name):
    x, mask = audio(1, 0)
    with pytest.raises(ValueError, match=name):
        generate(gpt2[1], x[:1], mask[:1], **kw)
