"""Training: everything that turns a corpus into a trained recognizer, kept apart from the model code.

The model modules (one level up) are all a reader needs to follow a waveform to text; this package is what makes
the weights. In reading order:

    data.py      generic data pieces for any corpus given as manifests (`audio_path<TAB>transcript` lines):
                 ManifestDataset, length-bucketed batches (BucketBatchSampler, rank_share), Augmentation, and the
                 Collator that pads audio and builds labels
    digits.py    the spoken-digits corpus: espeak-ng says random digit strings in many voices -> wavs, manifests
                 and a word-level tokenizer (`minispeechseq data DIR`); the bundled model was trained on it
    train.py     presets (model shapes), the training loop with exact resume and DDP (`minispeechseq train`)
    metrics.py   word and character error rates (WER, CER), computed with jiwer
    evaluate.py  WER / CER of a saved model on a manifest, or on voices it never heard (`minispeechseq evaluate`)

Each command-line program also runs as `python -m minispeechseq.training.<module>`. Training needs the `train`
extra (`pip install 'minispeechseq[train]'`, for jiwer).
"""
