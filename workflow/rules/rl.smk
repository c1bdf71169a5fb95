"""Reinforcement learning on GSM8K-form problems: sample a group per prompt, reward correct answers.
Launched like mid-training (mid.smk), from the SFT checkpoint."""


use rule mid_train as chat_rl with:
    input:
        start="results/sft/{model}",
        chat_data=model_chat_data,
    output:
        update(directory("results/rl/{model}")),  # the previous checkpoint stays until the new one is complete; restored if the job fails
    log:
        "logs/chat_rl/{model}.log",
    benchmark:
        "results/benchmarks/chat_rl/{model}.tsv"
    params:
        args=model_flags("rl"),
        module="snakechat.chat_rl",
        code=code_fingerprint("snakechat.chat_rl"),
