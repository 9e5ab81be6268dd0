"""Text decoders with cross-attention to the speech encoder: one file per architecture."""
