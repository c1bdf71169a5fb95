"""Small real pieces for the tests that run tiny models: one torch thread, a tokenizer, GPTs with
random weights, a checkpoint."""

import pytest
import torch

from snakechat.model.checkpoint import save_checkpoint
from snakechat.model.gpt import GPT, GPTConfig
from snakechat.model.tokenizer import Tokenizer

TEXTS = [
    "what is 6*7? it is 42. so the answer is 42.",
    "The capital of Zor is Quill. Answer: B. #### 12",
    "def add(a, b):\n    return a + b\n",
    "How many r are in strawberry? 'strawberry'.count('r') gives 3.",
    "hello there, how are you today? I am fine, thank you.",
] * 20


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; on a shared machine more threads only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tokenizer():
    return Tokenizer.train(TEXTS, vocab_size=320)


def random_gpt(vocab_size, seed=0, sequence_len=128, n_layer=2, n_head=2, n_kv_head=1, n_embd=32, scale=0.3):
    """A GPT with every weight random (the default init starts as the identity with a near-zero head,
    whose near-uniform logits would make greedy decoding a matter of ties)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(sequence_len=sequence_len, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head, n_embd=n_embd))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, scale)
    return model.eval()


def perturbed_gpt(vocab_size=97, **config):
    """A small GPT (2 layers, 4 heads, 2 kv heads, 64 wide, 32 positions unless `config` says) with
    its initial weights nudged at random: zero-initialised projections hide bugs, so every path matters."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{"sequence_len": 32, "vocab_size": vocab_size, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 64, **config}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def memorize(model, sequence, steps=300, lr=1e-2):
    """Train `model` until it reproduces `sequence` (token ids, or a list of them: one row each, each
    read from position 0) greedily, every token: a real model that says what we want."""
    rows = sequence if isinstance(sequence[0], list) else [sequence]
    width = max(len(r) for r in rows) - 1
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    targets = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r) - 1], targets[i, : len(r) - 1] = torch.tensor(r[:-1]), torch.tensor(r[1:])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        loss = model(ids, targets=targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            with torch.no_grad():
                guesses = model(ids).argmax(-1)
            if torch.equal(guesses[targets >= 0], targets[targets >= 0]):  # every token, not just the mean loss
                break
    return model.eval()


def write_checkpoint(directory, tok_dir, seed=0, sequence_len=128):
    """A random tiny GPT + tokenizer saved as a real checkpoint directory."""
    tok = tokenizer()
    tok.save(tok_dir)
    model = random_gpt(tok.vocab_size, seed=seed, sequence_len=sequence_len)
    meta = {"model_config": model.config.to_dict(), "tokenizer": str(tok_dir), "step": 0}
    save_checkpoint(directory, model, meta)
    return directory
