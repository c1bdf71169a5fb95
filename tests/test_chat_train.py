"""Chat training stages: batches, mid-training, SFT, RL, resume, and what a config change re-runs."""

import torch

from snakechat import chat_batches
from snakechat.chat_batches import IGNORE


def test_pad_rows_targets_only_assistant_tokens_and_never_padding():
    rows = [
        ([1, 10, 11, 12, 13], [0, 0, 1, 1, 0]),
        ([1, 20, 21], [0, 1, 1]),
    ]
    x, y = chat_batches.pad_rows(rows, pad_id=99)
    assert x.tolist() == [[1, 10, 11, 12], [1, 20, 99, 99]]
    # target t is ids[t+1] when mask[t+1] is 1
    assert y.tolist() == [[IGNORE, 11, 12, IGNORE], [20, 21, IGNORE, IGNORE]]


class FakeTok:
    """Enough of a tokenizer for batching tests: only the padding id is read."""

    bos_id = 0


def fake_render(monkeypatch):
    """render() stand-in: ids [bos, user chars..., reply chars...], mask 1 on the reply."""
    import snakechat.chat_batches as cb

    def render(tok, conv, max_tokens):
        user, reply = conv["messages"][0]["content"], conv["messages"][1]["content"]
        ids = [0] + [ord(c) for c in user] + [ord(c) for c in reply]
        mask = [0] * (1 + len(user)) + [1] * len(reply)
        ids, mask = ids[:max_tokens], mask[:max_tokens]
        return (ids, mask) if any(mask[1:]) else None

    monkeypatch.setattr(cb, "render", render)


def conv(user, reply):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def test_conversation_loader_covers_each_conversation_once_per_pass_and_reshuffles(monkeypatch):
    fake_render(monkeypatch)
    convs = [conv("q", chr(100 + i)) for i in range(10)]
    loader = chat_batches.ConversationLoader(FakeTok(), convs, device_batch=3, total_batch=3, max_tokens=16, seed=5)
    assert loader.steps_per_pass() == 3
    first = [int(v) for _ in range(3) for v in loader.next_batch()[1][:, 1]]
    second = [int(v) for _ in range(3) for v in loader.next_batch()[1][:, 1]]
    assert len(set(first)) == 9 and len(set(second)) == 9 and first != second
    again = chat_batches.ConversationLoader(FakeTok(), convs, device_batch=3, total_batch=3, max_tokens=16, seed=5)
    again.load_state_dict(loader.state_dict())
    assert torch.equal(again.next_batch()[0], loader.next_batch()[0])  # the position restores exactly


def test_conversation_loader_rows_do_not_depend_on_the_number_of_processes(monkeypatch):
    fake_render(monkeypatch)
    convs = [conv("q" * (i % 4), chr(100 + i)) for i in range(24)]
    one = chat_batches.ConversationLoader(FakeTok(), convs, device_batch=2, total_batch=8, max_tokens=16, seed=1)
    two = [chat_batches.ConversationLoader(FakeTok(), convs, device_batch=2, total_batch=8, max_tokens=16, seed=1, rank=r, world_size=2) for r in range(2)]
    for _step in range(4):
        rows_one = sorted(tuple(r[r >= 0].tolist()) for _ in range(4) for r in one.next_batch()[1])
        rows_two = sorted(tuple(r[r >= 0].tolist()) for loader in two for _ in range(2) for r in loader.next_batch()[1])
        assert rows_one == rows_two


def test_conversation_loader_drops_rows_cut_before_the_reply(monkeypatch):
    fake_render(monkeypatch)
    convs = [conv("a long question", "x"), conv("q", "y")]
    loader = chat_batches.ConversationLoader(FakeTok(), convs, device_batch=2, total_batch=2, max_tokens=6, seed=0)
    x, y = loader.next_batch()
    assert x.shape[0] == 1 and y[y >= 0].tolist() == [ord("y")]


def test_packed_loader_is_contiguous_shifted_and_wraps():
    rendered = [(list(range(i * 10, i * 10 + 7)), [0] * 7) for i in range(5)]  # 35 tokens
    loader = chat_batches.PackedChatLoader(rendered, device_batch=2, sequence_len=4)
    flat = loader.tokens.tolist()
    x, y = loader.next_batch()
    assert x.flatten().tolist() == flat[:8] and y.flatten().tolist() == flat[1:9]
    assert loader.micro_batches_per_pass() == 4
    x4, _ = loader.micro_batch(4)  # past the end: wraps round
    assert x4.flatten().tolist() == [flat[(32 + i) % 35] for i in range(8)]


def test_group_advantages_by_hand():
    from snakechat.rl_math import group_advantages

    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    adv = group_advantages(rewards)
    assert adv.tolist() == [[0.5, -0.5, -0.5, 0.5], [-0.25, -0.25, -0.25, 0.75], [0.0, 0.0, 0.0, 0.0]]


def test_pass_at_k_by_hand():
    from snakechat.rl_math import pass_at_k

    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert abs(pass_at_k(4, 1, 1) - 0.25) < 1e-12
    assert abs(pass_at_k(4, 1, 2) - 0.5) < 1e-12  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert abs(pass_at_k(5, 2, 3) - 0.9) < 1e-12  # 1 - C(3,3)/C(5,3) = 1 - 1/10


def test_sample_rows_train_only_on_sampled_tokens():
    from snakechat.rl_math import sample_rows

    # prompt of 3 tokens; second sample has a forced tool output (mask 0) in the middle
    seqs = [[1, 2, 3, 40, 41], [1, 2, 3, 50, 51, 52, 53]]
    masks = [[0, 0, 0, 1, 1], [0, 0, 0, 1, 0, 0, 1]]
    x, y = sample_rows(seqs, masks, pad_id=0)
    assert x.tolist() == [[1, 2, 3, 40, 0, 0], [1, 2, 3, 50, 51, 52]]
    assert y.tolist() == [[IGNORE, IGNORE, 40, 41, IGNORE, IGNORE], [IGNORE, IGNORE, 50, IGNORE, IGNORE, 53]]
