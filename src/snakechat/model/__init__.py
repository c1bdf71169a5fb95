"""The model and its inference: the transformer, the KV-cache engine and its calculator tool, precision,
checkpoints, the tokenizer, chat rendering and sizing from depth."""
