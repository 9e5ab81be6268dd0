"""Make the Speech2Text2 reference fixtures in tests/fixtures/speech2text2/ with transformers 4.50.3.

transformers 5.x removed Speech2Text2 (and 4.51-4.57 cannot build it), so its outputs are computed once, here,
in a separate environment, and committed. This script is not a test and is not run by the test suite:

    python -m venv /tmp/t450
    /tmp/t450/bin/pip install torch==2.13.0 transformers==4.50.3 numpy safetensors
    /tmp/t450/bin/python tests/make_speech2text2_fixtures.py

What it writes (all fp32, a few hundred KB in all):
  decoder/                   Speech2Text2ForCausalLM (d_model 32, 2 layers, 4 heads, vocab 100), save_pretrained
  decoder_kv24/              the same with cross_attention_hidden_size=24: transformers ignores that key (its
                             encoder_attn k/v always read d_model), so the k/v projections are replaced by
                             Linear(24, 32) here to produce the reference for an encoder of another width
  decoder_io.safetensors     inputs and transformers' outputs of both decoders (names below)
  generate/                  SpeechEncoderDecoderModel(wav2vec2 width 24 + the Speech2Text2 decoder, with the
                             enc_to_dec_proj 24 -> 32 that transformers adds), save_pretrained
  generate_io.safetensors    input_values, attention_mask, greedy `generated_ids`, and the teacher-forced
                             forward on them: `logits`, `encoder_last_hidden_state` (4.50.3 returns it after
                             enc_to_dec_proj, i.e. 32 wide: what the decoder's cross-attention reads)
"""

from __future__ import annotations

import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from torch import nn

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "speech2text2")
PAD = 1


def decoder_config(**overrides) -> transformers.Speech2Text2Config:
    return transformers.Speech2Text2Config(
        vocab_size=100, d_model=32, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=48,
        max_target_positions=64, dropout=0.0, is_decoder=True, add_cross_attention=True,
        pad_token_id=PAD, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, **overrides,
    )


def stepwise_logits(model, input_ids, attention_mask, enc, enc_mask, prefix: int) -> torch.Tensor:
    """transformers' cached decoding: the first `prefix` tokens at once, then one token per call."""
    out = model(input_ids=input_ids[:, :prefix], attention_mask=attention_mask[:, :prefix],
                encoder_hidden_states=enc, encoder_attention_mask=enc_mask, use_cache=True)
    logits, past = [out.logits], out.past_key_values
    for t in range(prefix, input_ids.shape[1]):
        out = model(input_ids=input_ids[:, t : t + 1], attention_mask=attention_mask[:, : t + 1],
                    encoder_hidden_states=enc, encoder_attention_mask=enc_mask, past_key_values=past, use_cache=True)
        logits.append(out.logits)
        past = out.past_key_values
    return torch.cat(logits, dim=1)


def make_decoders(io: dict) -> None:
    torch.manual_seed(0)
    B, S, T = 2, 7, 11
    # Right padding (row 1 ends with 2 pads) and left padding (row 1 starts with 2 pads).
    ids = torch.randint(3, 100, (B, S))
    ids[1, 5:] = PAD
    ids_left = torch.randint(3, 100, (B, S))
    ids_left[1, :2] = PAD
    enc = torch.randn(B, T, 32)
    enc24 = torch.randn(B, T, 24)
    enc_mask = torch.ones(B, T, dtype=torch.long)
    enc_mask[0, 8:] = 0  # padded frames
    labels = ids.masked_fill(ids == PAD, -100)
    io.update(input_ids=ids, attention_mask=ids.ne(PAD).long(), input_ids_left=ids_left,
              attention_mask_left=ids_left.ne(PAD).long(), encoder_hidden_states=enc,
              encoder_hidden_states_24=enc24, encoder_attention_mask=enc_mask, labels=labels)

    model = transformers.Speech2Text2ForCausalLM(decoder_config()).eval()
    model.save_pretrained(os.path.join(HERE, "decoder"), safe_serialization=True)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=io["attention_mask"], encoder_hidden_states=enc,
                    encoder_attention_mask=enc_mask, labels=labels, output_attentions=True,
                    output_hidden_states=True, use_cache=False)
        io["logits"], io["loss"] = out.logits, out.loss.reshape(1)
        for i, (a, c) in enumerate(zip(out.attentions, out.cross_attentions)):
            io[f"attentions.{i}"], io[f"cross_attentions.{i}"] = a, c
        io["logits_step"] = stepwise_logits(model, ids, io["attention_mask"], enc, enc_mask, prefix=3)
        io["logits_left"] = model(input_ids=ids_left, attention_mask=io["attention_mask_left"],
                                  encoder_hidden_states=enc, encoder_attention_mask=enc_mask, use_cache=False).logits
        # transformers' own cached run over the left-padded batch: it numbers new tokens from the past *length*,
        # not from the real tokens before them, so row 1 diverges from its full forward (kept to show that).
        io["logits_left_step"] = stepwise_logits(model, ids_left, io["attention_mask_left"], enc, enc_mask, prefix=3)
        io["logits_no_encoder"] = model(input_ids=ids, attention_mask=io["attention_mask"], use_cache=False).logits

    model24 = transformers.Speech2Text2ForCausalLM(decoder_config(cross_attention_hidden_size=24)).eval()
    for layer in model24.model.decoder.layers:
        for name in ("k_proj", "v_proj"):
            proj = nn.Linear(24, 32)
            nn.init.normal_(proj.weight, std=0.02)
            setattr(layer.encoder_attn, name, proj)
    model24.save_pretrained(os.path.join(HERE, "decoder_kv24"), safe_serialization=True)
    with torch.no_grad():
        io["logits_kv24"] = model24(input_ids=ids, attention_mask=io["attention_mask"], encoder_hidden_states=enc24,
                                    encoder_attention_mask=enc_mask, use_cache=False).logits


def make_generate(io: dict) -> None:
    torch.manual_seed(1)
    enc_config = transformers.Wav2Vec2Config(
        hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, feat_extract_norm="layer", do_stable_layer_norm=True,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
        final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0, vocab_size=100, initializer_range=0.2,
    )
    # Larger random weights than the default 0.02, so that the generated text depends on the audio.
    config = transformers.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(enc_config, decoder_config(init_std=0.2))
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, PAD, 2
    model = transformers.SpeechEncoderDecoderModel(config=config).eval()
    model.save_pretrained(os.path.join(HERE, "generate"), safe_serialization=True)

    input_values = torch.randn(2, 2000)
    attention_mask = torch.ones(2, 2000, dtype=torch.int32)
    input_values[1, 1500:], attention_mask[1, 1500:] = 0.0, 0  # the second utterance is shorter
    with torch.no_grad():
        generated = model.generate(input_values, attention_mask=attention_mask, max_new_tokens=8, num_beams=1,
                                   do_sample=False, decoder_start_token_id=2, eos_token_id=2, pad_token_id=PAD)
        out = model(input_values=input_values, attention_mask=attention_mask, decoder_input_ids=generated,
                    decoder_attention_mask=generated.ne(PAD).long())
    io.update(input_values=input_values, attention_mask=attention_mask, generated_ids=generated,
              logits=out.logits, encoder_last_hidden_state=out.encoder_last_hidden_state)


def main() -> None:
    if transformers.__version__ != "4.50.3":
        sys.exit(f"run this with transformers 4.50.3 (found {transformers.__version__}); see the docstring")
    os.makedirs(HERE, exist_ok=True)
    dec_io: dict = {}
    make_decoders(dec_io)
    save_file({k: v.contiguous() for k, v in dec_io.items()}, os.path.join(HERE, "decoder_io.safetensors"))
    gen_io: dict = {}
    make_generate(gen_io)
    save_file({k: v.contiguous() for k, v in gen_io.items()}, os.path.join(HERE, "generate_io.safetensors"))
    print("generated ids:", gen_io["generated_ids"].tolist())
    print("wrote", HERE)


if __name__ == "__main__":
    main()
