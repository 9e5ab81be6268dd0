"""Tutorial 11: real checkpoints. The files transformers writes, and how their names become ours.

Run it:  pip install -e ".[test]" && python tutorials/11_real_checkpoints.py
         (checkpoints go to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing; steps 1-4 and 6
         need transformers, and are skipped with a message without it; step 7 runs only when a real checkpoint is
         already in the local hub cache, and never downloads)

A checkpoint on the hub is a folder: config.json, the weights, and the preprocessing files. The weights come in
three layouts, all of which minispeechseq reads:

    model.safetensors                        one file, no pickle (what transformers writes today)
    model-0000k-of-0000n.safetensors + model.safetensors.index.json    shards, for big models
    pytorch_model.bin                        a pickled state dict (older checkpoints), often with older key names

No hub here: we let transformers build a tiny random wav2vec2 + BERT pair and write it, so the folders are
exactly what transformers makes; load each with minispeechseq; compare the logits; and read, line by line, what
`minispeechseq inspect` prints and the weights_convert/ table behind it. Then, if this machine's hub cache holds a
real checkpoint (section 7), the same loader on it.

Shape legend: B batch, L samples, S tokens, V vocabulary, D width.
"""

# %%
import contextlib
import io
import json
import os
import shutil
import sys

import torch
from minispeechseq.weights_convert import bert as bert_table
from minispeechseq.weights_convert import wav2vec2 as wav2vec2_table

import minispeechseq
from minispeechseq import (
    Processor,
    SpeechEncoderDecoderModel,
    Wav2Vec2ForCTC,
    load_audio,
)
from minispeechseq.tools import cli

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tutorials/, for standins.py
import standins  # the tiny stand-in checkpoints' sizes, shared by the tutorials

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(OUT, exist_ok=True)
WORK = os.path.join(OUT, "11_checkpoints")
shutil.rmtree(WORK, ignore_errors=True)
torch.manual_seed(0)
torch.set_num_threads(min(2, os.cpu_count() or 1))

try:
    import transformers
except ImportError:
    transformers = None
    print("transformers is not installed (pip install -e '.[test]'): steps 1-4 and 6 are skipped; 5 and 7 still run.")

# %% [markdown]
# ## 1. Three layouts, written by transformers
#
# transformers 5 writes safetensors only (one file, or shards with `max_shard_size`). Checkpoints made by older
# versions are `pytorch_model.bin`: `torch.save` of the state dict, with names that have since changed (the
# positional conv's weight norm as `weight_g` / `weight_v`, and LayerNorm parameters of TF-ported models as
# `gamma` / `beta`). We write that third one ourselves from transformers' own tensors, renamed the old way.

# %%
if transformers is not None:
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # The sizes of tutorial 03's stand-ins (tutorials/standins.py), built by transformers' own classes this time.
    encoder_config = transformers.Wav2Vec2Config(**standins.TINY_WAV2VEC2)
    decoder_config = transformers.BertConfig(**standins.tiny_bert(50, is_decoder=True, add_cross_attention=True))
    config = transformers.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder_config, decoder_config)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 0, 3
    reference = transformers.SpeechEncoderDecoderModel(config).eval()

    folders = {name: os.path.join(WORK, name) for name in ("safetensors", "sharded", "legacy_bin")}
    reference.save_pretrained(folders["safetensors"])
    reference.save_pretrained(folders["sharded"], max_shard_size="100KB")
    os.makedirs(folders["legacy_bin"])
    shutil.copy(os.path.join(folders["safetensors"], "config.json"), folders["legacy_bin"])
    old_names = {}
    for key, tensor in reference.state_dict().items():
        key = key.replace("conv.parametrizations.weight.original0", "conv.weight_g")
        key = key.replace("conv.parametrizations.weight.original1", "conv.weight_v")
        if ".LayerNorm." in key:  # BERT's LayerNorm modules, as TF-ported checkpoints name them
            key = key.replace(".LayerNorm.weight", ".LayerNorm.gamma").replace(".LayerNorm.bias", ".LayerNorm.beta")
        old_names[key] = tensor.clone()
    torch.save(old_names, os.path.join(folders["legacy_bin"], "pytorch_model.bin"))
    for name, folder in folders.items():
        print(f"{name:12s} {sorted(os.listdir(folder))}")
    assert any(f.endswith(".index.json") for f in os.listdir(folders["sharded"]))
    with open(os.path.join(folders["sharded"], "model.safetensors.index.json"), encoding="utf-8") as f:
        index = json.load(f)["weight_map"]  # tensor name -> the shard that holds it
    print(f"the index maps {len(index)} tensors to {len(set(index.values()))} shards, e.g. "
          f"{next(iter(index.items()))}")

# %% [markdown]
# ## 2. One loader for all three, and the same logits as transformers
#
# `SpeechEncoderDecoderModel.from_pretrained(folder)` finds whichever weight files are there (safetensors first,
# shards through their index, a .bin with `torch.load(weights_only=True)`, which refuses pickled code), renames
# every tensor through the tables of weights_convert/, and fails naming any key it cannot place.

# %%
if transformers is not None:
    audio = torch.randn(1, 8000)  # (B, L) half a second of noise: shapes and equality are the point here
    ids = torch.tensor([[2, 7, 11, 5]])  # (B, S)
    with torch.no_grad():
        expected = reference(input_values=audio, decoder_input_ids=ids).logits  # (B, S, V)
        for name, folder in folders.items():
            ours = SpeechEncoderDecoderModel.from_pretrained(folder).eval()
            diff = (ours(audio, decoder_input_ids=ids).logits - expected).abs().max().item()
            print(f"{name:12s} loaded: {len(ours.load_report.loaded)} tensors; max |logits - transformers'| = {diff:.1e}")
            assert diff < 1e-5 and ours.load_report.initialized == []

# %% [markdown]
# ## 3. `minispeechseq inspect`: what the loader did, line by line
#
# `minispeechseq inspect FOLDER` prints a model's `load_report`: the header (class, parameters, the token ids and
# each half's shape), then one line per tensor, "checkpoint name -> our name [shape]" (the name as the table saw
# it: after the steps the notes at the end list, such as stripping BERT's `bert.` prefix and renaming
# `gamma`/`beta`), then what was skipped (a .bin written from a state dict holds the LM head's tied bias under a
# second name, which the decoder does not need), what had to be initialised (nothing, for a complete checkpoint),
# and the notes. Run it on the legacy folder yourself; here we read the same report as data.

# %%
if transformers is not None:
    print(f"$ minispeechseq inspect {folders['legacy_bin']}   # prints this report; read here from the model")
    report = SpeechEncoderDecoderModel.from_pretrained(folders["legacy_bin"]).load_report
    print(f"key mapping ({len(report.loaded)} tensors): checkpoint name -> ours")
    for needle in ("pos_conv_embed.conv.weight_g", "layer.1.crossattention.self.query.weight", "embeddings.LayerNorm.weight"):
        theirs, ours = next((theirs, ours) for theirs, ours in report.loaded if theirs.endswith(needle))
        print(f"  {theirs} -> {ours}")
    print("  ...")
    print(f"skipped ({len(report.skipped)}):", ", ".join(report.skipped) or "none")
    print(f"newly initialised ({len(report.initialized)}):", ", ".join(report.initialized) or "none")
    print("\n".join(f"note: {note}" for note in report.notes))
    assert any("weight_g" in note for note in report.notes)
    assert any("gamma/beta" in note for note in report.notes)
    assert report.initialized == [], "a complete checkpoint leaves nothing to initialise"

# %% [markdown]
# Reading the three lines picked out above:
#
# - `encoder.encoder.pos_conv_embed.conv.weight_g -> encoder.pos_conv.weight_g`: the pair's `encoder.` prefix, then
#   transformers' `encoder.pos_conv_embed.conv` (wav2vec2's encoder module has its own `encoder` inside) becomes our
#   flat `pos_conv`; the old weight-norm name is read as the new one.
# - `decoder.encoder.layer.1.crossattention.self.query.weight -> decoder.layers.1.cross_attn.q_proj.weight`
#   (`bert.` already stripped): BERT calls its decoder layers an "encoder" and its cross-attention
#   "crossattention.self"; we call them what they are, with the same `q_proj` as every other attention here.
# - `decoder.embeddings.LayerNorm.weight -> decoder.embed_norm.weight`: in the file it was `...LayerNorm.gamma`;
#   TF-era `gamma`/`beta` are renamed first (only on LayerNorm modules, never on any parameter that happens to be
#   called gamma), then the table applies.
#
# ## 4. `minispeechseq convert`: a legacy folder to clean safetensors
#
# `convert SRC DST` loads through the same tables and saves in today's layout (transformers' current names), so the
# legacy folder becomes one any tool reads without pickle.

# %%
if transformers is not None:
    clean = os.path.join(WORK, "converted")
    with contextlib.redirect_stdout(io.StringIO()) as said:
        assert cli.main(["convert", folders["legacy_bin"], clean]) == 0
    print(said.getvalue().strip(), "->", sorted(os.listdir(clean)))
    from safetensors.torch import load_file

    keys = load_file(os.path.join(clean, "model.safetensors")).keys()
    assert not any(k.endswith(("weight_g", "gamma", "beta")) for k in keys), "only today's names are written"
    with torch.no_grad():
        again = transformers.SpeechEncoderDecoderModel.from_pretrained(clean).eval()
        assert torch.allclose(again(input_values=audio, decoder_input_ids=ids).logits, expected, atol=1e-6)
    print("transformers reads the converted folder: same logits")

# %% [markdown]
# ## 5. The tables themselves
#
# weights_convert/ has one module per architecture. Each holds a `TABLE`: checkpoint name -> our name, `{}` standing
# for a layer index, `None` for keys that are skipped on purpose (a task head a decoder does not use), and the
# first name listed for one of ours is the one we write. What a table cannot say (a prefix to strip, a legacy name,
# a transpose) is written out in that module's `to_ours`, in a few plain lines. Below, a few rows of each.

# %%
for name, table in (("wav2vec2", wav2vec2_table.TABLE), ("bert", bert_table.TABLE)):
    rows = list(table.table.items())  # the plain dict the module wrote
    print(f"\nweights_convert/{name}.py: {len(rows)} rows, e.g.")
    for theirs, ours in [r for r in rows if "{}" in r[0]][:3] + [r for r in rows if r[1] is None][:2]:
        print(f"  {theirs!r:62} -> {ours!r}")
    assert rows and any(o is None for _, o in rows) and any("{}" in t for t, _ in rows)

# %% [markdown]
# ## 6. GPT-2's Conv1D: the transposes, on a real key
#
# The bundled digits model's decoder is a GPT-2, and GPT-2 checkpoints store their projections the other way round.
# OpenAI wrote GPT-2's (Radford et al. 2019) linear layers as a `Conv1D` (a convolution of kernel 1) whose weight is
# (in, out) and which computes x · W + b; `nn.Linear` stores (out, in) and computes x · Wᵀ + b. transformers kept
# OpenAI's layout, so that the original files load unchanged; we use `nn.Linear`, so every such weight is transposed
# on the way in (nanoGPT's `from_pretrained` keeps the same list). And q, k, v are one fused `c_attn` of width 3·D,
# split in q, k, v order. weights_convert/gpt2.py does both; here we do them by hand on a file transformers wrote.

# %%
if transformers is not None:
    from safetensors.torch import load_file

    from minispeechseq.decoders.gpt2 import GPT2LMHeadModel

    gpt2_config = transformers.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    gpt2_reference = transformers.GPT2LMHeadModel(gpt2_config).eval()
    gpt2_folder = os.path.join(WORK, "gpt2")
    gpt2_reference.save_pretrained(gpt2_folder)
    in_file = load_file(os.path.join(gpt2_folder, "model.safetensors"))  # checkpoint name -> tensor
    fc_key = next(k for k in in_file if k.endswith("h.0.mlp.c_fc.weight"))
    W, b = in_file[fc_key], in_file[fc_key.replace(".weight", ".bias")]  # W (in, out) = (D, 4·D)
    print(f"{fc_key}: {tuple(W.shape)} = (in, out); nn.Linear would store (out, in)")
    assert W.shape == (32, 4 * 32)

    x = torch.randn(3, 32)  # (S, D) three token vectors
    with torch.no_grad():
        conv1d_out = gpt2_reference.transformer.h[0].mlp.c_fc(x)  # transformers' Conv1D module, (S, 4·D)
        linear = torch.nn.Linear(32, 4 * 32)
        linear.weight.copy_(W.T)  # (in, out) -> (out, in): the one transpose
        linear.bias.copy_(b)
        assert torch.allclose(x @ W + b, conv1d_out, atol=1e-6), "Conv1D computes x · W + b"
        assert torch.allclose(linear(x), conv1d_out, atol=1e-6), "a Linear holding Wᵀ computes the same"

    ours_gpt2 = GPT2LMHeadModel.from_pretrained(gpt2_folder).eval()
    our_state = ours_gpt2.state_dict()
    assert torch.equal(our_state["layers.0.fc1.weight"], W.T), "the loader stored the transpose"

    qkv_key = next(k for k in in_file if k.endswith("h.0.attn.c_attn.weight"))
    fused = in_file[qkv_key]  # (D, 3·D): q, k, v side by side along the output dimension
    for part, W_part in zip("qkv", fused.split(32, dim=-1)):  # 3 x (D, D)
        assert torch.equal(our_state[f"layers.0.self_attn.{part}_proj.weight"], W_part.T), part
    print(f"{qkv_key}: {tuple(fused.shape)} split into q, k, v, each transposed = "
          "our layers.0.self_attn.{q,k,v}_proj")

    tokens = torch.tensor([[5, 9, 2, 7]])  # (B, S)
    with torch.no_grad():
        gap = (ours_gpt2(tokens).logits - gpt2_reference(input_ids=tokens).logits).abs().max().item()
    print(f"GPT-2 logits, ours vs transformers': max |diff| = {gap:.1e}")
    assert gap < 1e-5

# %% [markdown]
# ## 7. A real checkpoint, when this machine has one
#
# Everything above ran on tiny random models written here. A real checkpoint is the same kind of folder, only
# bigger. Every `from_pretrained` here also takes a hub id (`facebook/wav2vec2-base-960h`), as transformers' does,
# and finds it in huggingface_hub's cache (`~/.cache/huggingface/hub`, or `$HF_HUB_CACHE`; see
# minispeechseq/files/resolve.py). With `local_files_only=True` it never asks the network: a checkpoint that is not
# cached is one FileNotFoundError naming the cache, and this section then prints how to get one and moves on. It
# tries, in order:
#
# - `facebook/wav2vec2-base-960h`: wav2vec2-base (pretrained as tutorial 13 shows) fine-tuned with a CTC head
#   (tutorial 07) on 960 h of LibriSpeech; 94 M parameters, 360 MB. Compared with transformers' own
#   `Wav2Vec2ForCTC` on the same file when transformers is installed.
# - `facebook/s2t-wav2vec2-large-en-de`: a real speech encoder-decoder, wav2vec2-large + a Speech2Text2 decoder
#   that writes German from English speech (CoVoST 2). transformers 5 removed Speech2Text2, so there is no
#   reference to compare with in a current transformers; the section transcribes (translates) and stops there.
#
# On the shipped recording of espeak-ng saying "one nine", the English CTC model should write ONE NINE or close:
# synthetic speech is far from LibriSpeech's read audiobooks (tutorial 12 measures that kind of gap).

# %%
REAL = {"facebook/wav2vec2-base-960h": Wav2Vec2ForCTC, "facebook/s2t-wav2vec2-large-en-de": SpeechEncoderDecoderModel}
found = None
for repo_id, model_class in REAL.items():
    try:
        real = model_class.from_pretrained(repo_id, local_files_only=True)  # the cache or nothing: no download
    except FileNotFoundError:
        continue
    found = repo_id
    break
if found is None:
    print("\nsection 7 skipped: no real checkpoint in the local hub cache. On a machine with internet, run "
          "`hf download facebook/wav2vec2-base-960h` (`huggingface-cli download ...` before huggingface_hub 1.0), "
          "then copy ~/.cache/huggingface/hub here.")
else:
    processor = Processor.from_pretrained(found, local_files_only=True)
    report = real.load_report
    n = real.num_parameters()
    print(f"\n{found} ({type(real).__name__}): {n / 1e6:.1f} M parameters, {n * 4 / 2**20:.0f} MiB in fp32; "
          f"{len(report.loaded)} tensors loaded, {len(report.skipped)} skipped {report.skipped[:3]}, "
          f"{len(report.initialized)} newly initialised {report.initialized[:3]}")
    samples = os.path.join(os.path.dirname(minispeechseq.__file__), "bundled", "samples")
    speech = load_audio(os.path.join(samples, "003183.wav"))  # (L,) espeak-ng saying "one nine"
    inputs = processor(speech, sampling_rate=16000, return_tensors="pt")  # input_values (B=1, L)
    with torch.no_grad():
        if isinstance(real, Wav2Vec2ForCTC):
            logits = real(inputs.input_values).logits  # (B, T, V): one letter (or blank) per 20 ms frame
            text = processor.batch_decode(logits.argmax(dim=-1))[0]  # greedy CTC: merge repeats, drop blanks
        else:
            ids = real.generate(inputs.input_values, max_new_tokens=40)  # (B, S)
            text = processor.batch_decode(ids, skip_special_tokens=True)[0]
    print(f"what it heard in 003183.wav (espeak-ng saying 'one nine'): {text!r}")
    if transformers is not None and isinstance(real, Wav2Vec2ForCTC):
        theirs = transformers.Wav2Vec2ForCTC.from_pretrained(found, local_files_only=True).eval()
        with torch.no_grad():
            gap = (theirs(inputs.input_values).logits - logits).abs().max().item()
        # 12 layers of fp32 rounding, added in a different order by two implementations: 1e-4 on logits of ~10.
        print(f"transformers' Wav2Vec2ForCTC on the same file: max |logits difference| = {gap:.1e} (tolerance 1e-4)")
        assert gap < 1e-4, gap
    assert report.initialized == [], "a complete checkpoint leaves nothing to initialise"

# %% [markdown]
# ## Exercises
#
# Each says what to change and what you should see; run the file again after each change.
#
# 1. In section 6, copy a square Conv1D weight (`h.0.attn.c_proj.weight`, (D, D)) into `out_proj` *without* the
#    transpose. Observe: no shape error, the model runs, and only the logits check fails. A non-square one
#    (`c_fc`) would fail loudly on the shape; the square ones are why the transpose list must be complete.
# 2. Split `c_attn` in k, q, v order instead of q, k, v. Observe: the equality with our `q_proj` fails, though
#    every shape fits.
# 3. Write the sharded folder with `max_shard_size="20KB"`. Observe: more shards, the same logits; the index
#    maps every tensor to one file.
#
# ## References
#
# - Radford, Wu, Child, Luan, Amodei, Sutskever (2019). Language Models are Unsupervised Multitask Learners.
#   OpenAI report (GPT-2)
# - Baevski, Zhou, Mohamed, Auli (2020). wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
#   Representations. NeurIPS 2020. arXiv:2006.11477
# - Devlin, Chang, Lee, Toutanova (2019). BERT: Pre-training of Deep Bidirectional Transformers for Language
#   Understanding. NAACL 2019. arXiv:1810.04805
