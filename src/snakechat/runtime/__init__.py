"""What every process needs: atomic files, torch.distributed set-up, provenance records and hashes,
and the settings dataclasses behind each stage's CLI."""
