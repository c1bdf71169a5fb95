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


def test_conversation_rows_cover_every_conversation_once_per_pass_and_reshuffle():
    rendered = [([1, 100 + i, 200 + i], [0, 1, 1]) for i in range(10)]
    rows = chat_batches.ConversationRows(rendered, batch_size=3, pad_id=0, seed=5)
    assert rows.micro_batches_per_pass() == 3
    first_pass = [int(v) for k in range(3) for v in rows.micro_batch(k)[0][:, 1]]
    second_pass = [int(v) for k in range(3, 6) for v in rows.micro_batch(k)[0][:, 1]]
    assert len(set(first_pass)) == 9 and len(set(second_pass)) == 9
    assert first_pass != second_pass
    again = chat_batches.ConversationRows(rendered, batch_size=3, pad_id=0, seed=5)
    assert torch.equal(again.micro_batch(4)[0], rows.micro_batch(4)[0])  # a pure function of the step


def test_packed_stream_is_contiguous_shifted_and_wraps():
    rendered = [(list(range(i * 10, i * 10 + 7)), [0] * 7) for i in range(5)]  # 35 tokens
    stream = chat_batches.PackedStream(rendered, batch_size=2, seq_len=4)
    flat = stream.tokens.tolist()
    x, y = stream.micro_batch(0)
    assert x.flatten().tolist() == flat[:8] and y.flatten().tolist() == flat[1:9]
    assert stream.micro_batches_per_pass() == 4
    x4, _ = stream.micro_batch(4)  # past the end: wraps around
    assert x4.flatten().tolist() == [flat[(32 + i) % 35] for i in range(8)]


def test_rank_share_splits_without_overlap():
    items = list(range(11))
    shares = [chat_batches.rank_share(items, r, 3) for r in range(3)]
    assert sorted(sum(shares, [])) == items


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
    x, y = sample_rows(3, seqs, masks, pad_id=0)
    assert x.tolist() == [[1, 2, 3, 40, 0, 0], [1, 2, 3, 50, 51, 52]]
    assert y.tolist() == [[IGNORE, IGNORE, 40, 41, IGNORE, IGNORE], [IGNORE, IGNORE, 50, IGNORE, IGNORE, 53]]
