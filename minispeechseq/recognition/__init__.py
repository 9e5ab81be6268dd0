"""Recognition: applications built on the model, off the reading path.

    recognizer.py   batched transcription: waveforms -> padded inputs -> `generate` -> text; `transcribe()`
    timestamps.py   word times from cross-attention (alignment heads, DTW, pauses)
    longform.py     long recordings cut at pauses, transcribed in chunks and stitched
    quantize.py     int8 inference on the CPU, which `from_pretrained(quantization=...)` applies through the table
                    the model base defines (modeling.QUANTIZERS)
"""
