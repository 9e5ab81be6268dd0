"""Training: everything that turns a corpus into a trained recognizer, kept apart from the model code.

The model modules (one level up) are all a reader needs to follow a waveform to text; this package is what makes
the weights. A library only: the command-line programs over it (`minispeechseq train`, `pretrain`, `evaluate`,
`data`) are in tools/. In reading order:

    data.py      generic data pieces for any corpus given as manifests (`audio_path<TAB>transcript` lines):
                 ManifestDataset, length-bucketed batches (BucketBatchSampler, rank_share), Augmentation, and the
                 Collator that pads audio and builds labels
    digits.py    the spoken-digits corpus: espeak-ng says random digit strings in many voices -> wavs, manifests
                 and a word-level tokenizer; the bundled model was trained on it
    fsdd.py      real recordings (the Free Spoken Digit Dataset) as manifests, joined strings, speaker folds
    augment.py   voice augmentations: speed, formant warp, band limits, EQ, rooms, coloured and babble noise
    train.py     presets (model shapes), the training loop with exact resume and DDP
    pretrain.py  a speech encoder taught by unlabelled audio (wav2vec 2.0's objective, or HuBERT-style clusters)
    metrics.py   word and character error rates (WER, CER), computed with jiwer
    evaluate.py  transcribing a manifest, voices it never heard, or noise added

Training needs the `train` extra (`pip install 'minispeechseq[train]'`: jiwer, scipy, pyroomacoustics).
"""
