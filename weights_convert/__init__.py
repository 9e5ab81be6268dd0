"""Key-mapping converters: transformers checkpoint names <-> minispeechseq names, one table per architecture."""
