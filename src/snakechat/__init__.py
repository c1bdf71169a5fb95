"""snakechat: a small ChatGPT-style LLM, trained end to end as a Snakemake workflow."""
