"""Supervised fine-tuning: one conversation per row, loss on the assistant's tokens only.
Launched like mid-training (mid.smk), from the mid checkpoint or, where the config skips mid, the base one."""


use rule mid_train as chat_sft with:
    input:
        start=sft_start,
        chat_data=model_chat_data,
    output:
        update(directory("results/sft/{model}")),  # the previous checkpoint stays until the new one is complete; restored if the job fails
    log:
        "logs/chat_sft/{model}.log",
    benchmark:
        "results/benchmarks/chat_sft/{model}.tsv"
    params:
        args=model_flags("sft"),
        module="snakechat.chat_sft",
        code=code_fingerprint("snakechat.chat_sft"),
