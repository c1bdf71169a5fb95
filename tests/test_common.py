import subprocess
import sys

import pytest

from snakechat.common import keep_freed_memory

TRAIN_AND_COUNT_FAULTS = """
import resource, sys, torch
from snakechat.common import keep_freed_memory
from snakechat.gpt import GPT
from snakechat.sizing import config_from_depth
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.manual_seed(0)
model = GPT(config_from_depth(2, 4096, 256))
tokens = torch.randint(0, 4096, (8, 257))

def step():
    model(tokens[:, :-1], tokens[:, 1:]).backward()
    model.zero_grad(set_to_none=True)

for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode):
    out = subprocess.run([sys.executable, "-c", TRAIN_AND_COUNT_FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_kept_memory_is_reused_without_page_faults():
    """By default glibc hands freed activations back and each training step faults them in again
    (30-40k faults over these 5 steps); kept, the steps reuse them."""
    default, kept = page_faults("default"), page_faults("keep")
    assert default > 10_000
    assert kept < default / 10


def test_keep_freed_memory_says_whether_it_applied():
    assert keep_freed_memory() is sys.platform.startswith("linux")
