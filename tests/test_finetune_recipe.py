"""transformers' speech seq2seq fine-tuning recipe (examples/pytorch/speech-recognition/run_speech_recognition_seq2seq.py),
run end to end with minispeechseq in place of transformers (issue 16, item 1).

The recipe's two halves, as its script writes them:
1. `prepare_dataset`, a dataset `map`: the feature extractor on one example (no padding, no tensors), the tokenizer
   on its transcript; the dataset stores both as plain lists.
2. `DataCollatorSpeechSeq2SeqWithPadding`: `feature_extractor.pad` and `tokenizer.pad` on a batch of those, the
   label padding replaced by -100, the decoder start token dropped from the labels (the model prepends it).
Then a few optimizer steps on a tiny overfit set, `generate` and `batch_decode`.

The checkpoint folder is written by transformers (its SpeechEncoderDecoderModel, BertTokenizer and feature
extractor); the same collator fed transformers' processor gives the same batches (labels exactly, features within
1e-6), on which transformers' model sees the same loss; and the weights we fine-tune, loaded by transformers,
generate the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import transformers

from minispeechseq import Processor, SpeechEncoderDecoderModel
from tests.test_doc_examples import tiny_bert_config, tiny_encoder_config, write_bert_tokenizer

# A tiny overfit set: four made-up recordings (chirps of different pitch and length), one transcript each.
TRANSCRIPTS = ["the quilter", "a middle classes", "we are glad", "the apostle of the middle"]


def recording(i: int) -> np.ndarray:
    n = 3200 + 700 * i  # different lengths, so the collator has padding to do
    t = np.arange(n) / 16000
    return (0.5 * np.sin(2 * np.pi * (150 + 120 * i) * t * (1 + t))).astype(np.float64)  # float64, as datasets gives


# ------------------------------------------------------------------------------ the recipe, as its script has it
def prepare_dataset(batch: dict, feature_extractor: Any, tokenizer: Any, model_input_name: str) -> dict:
    sample = batch["audio"]
    inputs = feature_extractor(sample["array"], sampling_rate=sample["sampling_rate"])
    batch[model_input_name] = inputs.get(model_input_name)[0]
    batch["input_length"] = len(sample["array"])
    batch["labels"] = tokenizer(batch["text"]).input_ids
    return batch


@dataclass
class DataCollatorSpeechSeq2SeqWithPadding:
    processor: Any
    decoder_start_token_id: int

    def __call__(self, features: list[dict]) -> dict:
        model_input_name = self.processor.model_input_names[0]
        input_features = [{model_input_name: feature[model_input_name]} for feature in features]
        label_features = [{"input_ids": feature["labels"]} for feature in features]

        batch = self.processor.feature_extractor.pad(input_features, return_tensors="pt")
        labels_batch = self.processor.tokenizer.pad(label_features, return_tensors="pt")
        # replace padding with -100 to ignore loss correctly
        labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
        # if the bos token was appended in the previous tokenization step, cut it here (the model prepends it)
        if (labels[:, 0] == self.decoder_start_token_id).all().cpu().item():
            labels = labels[:, 1:]
        batch["labels"] = labels
        return batch


def as_stored(example: dict) -> dict:
    """What a `datasets` map leaves: arrays come back as Python lists."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in example.items()}


# ------------------------------------------------------------------------------------------------ the test
def test_finetuning_recipe_end_to_end(tmp_path):
    folder = tmp_path / "wav2vec2-bert"
    torch.manual_seed(0)
    config = transformers.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(tiny_encoder_config(), tiny_bert_config())
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 0, 3  # [CLS], [PAD], [SEP]
    transformers.SpeechEncoderDecoderModel(config=config).save_pretrained(folder)
    write_bert_tokenizer(folder)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)

    processor = Processor.from_pretrained(folder)
    model = SpeechEncoderDecoderModel.from_pretrained(folder)
    model.freeze_feature_encoder()  # as the recipe does (--freeze_feature_encoder)
    model_input_name = processor.model_input_names[0]
    assert model_input_name == "input_values"

    raw = [{"audio": {"array": recording(i), "sampling_rate": 16000}, "text": text} for i, text in enumerate(TRANSCRIPTS)]
    dataset = [as_stored(prepare_dataset(dict(ex), processor.feature_extractor, processor.tokenizer, model_input_name))
               for ex in raw]
    assert [len(ex["input_values"]) for ex in dataset] == [3200, 3900, 4600, 5300]  # unpadded, one per example

    collator = DataCollatorSpeechSeq2SeqWithPadding(processor, decoder_start_token_id=model.config.decoder_start_token_id)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=False, collate_fn=collator)
    batches = list(loader)
    first = batches[0]
    assert first["input_values"].shape == (2, 3900) and first["input_values"].dtype == torch.float32
    assert first["labels"][0].tolist()[-1] == -100, "the shorter transcript's label padding is -100"
    assert bool((first["labels"] != 2).all()), "the [CLS] the tokenizer added is cut (the model prepends it)"

    # The same collator fed transformers' processor: the same batches.
    ref_processor = transformers.Wav2Vec2Processor.from_pretrained(folder)
    ref_dataset = [as_stored(prepare_dataset(dict(ex), ref_processor.feature_extractor, ref_processor.tokenizer,
                                             ref_processor.model_input_names[0])) for ex in raw]
    ref_first = DataCollatorSpeechSeq2SeqWithPadding(ref_processor, decoder_start_token_id=2)(ref_dataset[:2])
    assert sorted(first) == sorted(ref_first)
    assert float((first["input_values"] - ref_first["input_values"]).abs().max()) <= 1e-6
    assert torch.equal(first["labels"], ref_first["labels"])
    # ... and transformers' model, loaded from the same folder, sees the same loss on it.
    ref_model = transformers.SpeechEncoderDecoderModel.from_pretrained(folder).eval()
    model.eval()
    with torch.no_grad():
        ours_loss, ref_loss = model(**first).loss, ref_model(**ref_first).loss
    assert abs(ours_loss.item() - ref_loss.item()) < 1e-5, f"loss {ours_loss.item()} vs transformers {ref_loss.item()}"

    # A few optimizer steps on the four examples.
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(40):
        for batch in batches:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    print(f"\nrecipe: loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps")
    assert losses[-1] < 0.3 * losses[0], f"the loss should fall on a tiny overfit set: {losses[0]:.3f} -> {losses[-1]:.3f}"

    # Inference, as the recipe's evaluation does (predict_with_generate): generate on the collated batches, then
    # batch_decode. (The batches it trained on: this group-norm encoder gets no mask, so padding is part of what
    # it heard.) The fine-tuned weights, saved by us and loaded by transformers, decode to the same tokens there.
    model.eval()
    model.save_pretrained(tmp_path / "finetuned")
    ref_model = transformers.SpeechEncoderDecoderModel.from_pretrained(tmp_path / "finetuned").eval()
    transcripts = []
    for batch in batches:
        generated = model.generate(batch["input_values"], max_new_tokens=8)
        ref_generated = ref_model.generate(batch["input_values"], max_new_tokens=8)
        assert torch.equal(generated, ref_generated), f"{generated.tolist()} vs transformers {ref_generated.tolist()}"
        transcripts += processor.batch_decode(generated, skip_special_tokens=True)
        assert transcripts[-2:] == ref_processor.batch_decode(ref_generated, skip_special_tokens=True)
    print(f"recipe: transcripts {transcripts}")
    # 80 steps teach it whole sentences of its set (not yet which recording says which: see the loss above).
    assert set(transcripts) <= set(TRANSCRIPTS), f"the overfit model should say its training sentences: {transcripts}"
