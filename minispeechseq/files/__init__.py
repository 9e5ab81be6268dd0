"""File safety: everything that reads or writes outside the process, kept off the model's reading path.

    readers.py     the one reader of untrusted JSON and text (regular files only, size caps)
    resolve.py     where a `from_pretrained` name points (a local folder, or huggingface_hub's cache)
    saves.py       the marked folders a save works in, and the recovery of a save that was interrupted
    checkpoint.py  model.safetensors / pytorch_model.bin read and written without trusting the file, atomically
    audiofile.py   `load_audio`: a sound file's header checked before its samples are read
    memory.py      what a load or a generate call would need, against the memory available
"""
