"""The pipeline's plumbing on the Snakemake side: config checks against the schema and the launcher
that turns a rule's resources into torchrun/srun command lines."""
