"""Command-line prefixes that start a stage on the processes its rule was given.

`prefix(...)` returns what goes before `-m snakechat.<stage>`: plain `python` for one process,
`torchrun` for several on one node.
"""


def prefix(gpus=0, nodes=1, cpu_processes=1):
    nproc = gpus if gpus > 0 else cpu_processes
    if nproc <= 1 and nodes <= 1:
        return "python"
    return f"torchrun --standalone --nproc_per_node={nproc}"
