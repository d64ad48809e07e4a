"""Dataset preparation: read sources, clean, dedupe, split, train a tokenizer, store."""
