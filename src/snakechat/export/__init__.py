"""The transformers export: the mapping of names, weights, config and tokenizer, and the folder writer
that loads its own output back to check it."""
