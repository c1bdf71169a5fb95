"""The engine: cached generation equals uncached, seeded sampling repeats, stop tokens stop, tools run."""

import pytest
import torch

from snakechat.model.engine import Engine, KVCache, ToolState, sample_next
from tiny_chat_model import one_torch_thread  # noqa: F401 (autouse fixture)
from tiny_chat_model import memorize, random_gpt, tokenizer


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return random_gpt(tok.vocab_size)


def prompt_ids(tok, text="hello there"):
    return [tok.bos_id, tok.special_id("<|user_start|>"), *tok.encode(text), tok.special_id("<|user_end|>"), tok.special_id("<|assistant_start|>")]


def test_kv_cache_logits_match_full_forward(model):
    ids = torch.randint(0, model.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))
    full = model(ids)
    c = model.config
    cache = KVCache(2, c.n_layer, c.n_kv_head, c.n_embd // c.n_head, capacity=4)  # small: forces growth
    pieces = [model(ids[:, :7], kv_cache=cache)]  # prefill, then one token at a time
    for t in range(7, 20):
        pieces.append(model(ids[:, t : t + 1], kv_cache=cache))
    assert cache.pos == 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("temperature, num_samples", [(0.0, 1), (0.0, 3), (1.0, 4)])
def test_cache_and_no_cache_generate_the_same_tokens(model, tok, temperature, num_samples):
    ids = prompt_ids(tok)
    engine = Engine(model, tok)
    kw = dict(num_samples=num_samples, max_tokens=30, temperature=temperature, seed=7)
    with_cache = list(engine.generate(ids, use_cache=True, **kw))
    without = list(engine.generate(ids, use_cache=False, **kw))
    assert with_cache == without
    assert len(with_cache) > 1


def test_many_prompts_in_one_batch_match_one_at_a_time(model, tok):
    engine = Engine(model, tok)
    prompts = [prompt_ids(tok, t) for t in ("hi", "hello there, how are you today?", "what is 6*7?")]
    many = engine.generate_many(prompts, max_tokens=12, temperature=0.0)
    for prompt, (tokens, masks) in zip(prompts, many):
        alone, alone_masks = engine.generate_batch(prompt, max_tokens=12, temperature=0.0)
        assert tokens == alone[0][len(prompt):]
        assert masks == alone_masks[0][len(prompt):]
        assert 0 < len(tokens) <= 12
    sampled = engine.generate_many(prompts, max_tokens=12, temperature=1.0, seed=5)
    assert sampled == engine.generate_many(prompts, max_tokens=12, temperature=1.0, seed=5)


def test_seeded_sampling_is_deterministic(model, tok):
    engine = Engine(model, tok)
    ids = prompt_ids(tok)
    a, _ = engine.generate_batch(ids, num_samples=4, max_tokens=20, temperature=1.0, top_k=50, seed=3)
    b, _ = engine.generate_batch(ids, num_samples=4, max_tokens=20, temperature=1.0, top_k=50, seed=3)
    c, _ = engine.generate_batch(ids, num_samples=4, max_tokens=20, temperature=1.0, top_k=50, seed=4)
    assert a == b
    assert a != c
    assert len({tuple(row) for row in a}) > 1  # the rows of one batch are sampled independently


def test_top_k_one_is_greedy(model, tok):
    engine = Engine(model, tok)
    ids = prompt_ids(tok)
    greedy, _ = engine.generate_batch(ids, max_tokens=15, temperature=0.0)
    top1, _ = engine.generate_batch(ids, max_tokens=15, temperature=1.5, top_k=1, seed=9)
    assert greedy == top1


def test_top_p_keeps_the_smallest_likely_set():
    generator = torch.Generator().manual_seed(0)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(4000, -1)
    counts = lambda top_p: torch.bincount(sample_next(logits, generator, 1.0, top_p=top_p), minlength=4).tolist()  # noqa: E731
    assert counts(0.5)[1:] == [0, 0, 0]  # the first token alone reaches 0.5
    kept = counts(0.8)  # 0.5 + 0.3: two tokens, renormalised to 5:3
    assert kept[2:] == [0, 0] and abs(kept[0] / 4000 - 0.625) < 0.03
    assert all(counts(0.95)[:3]) and counts(0.95)[3] == 0
    assert all(counts(1.0))


def test_top_p_tiny_is_greedy(model, tok):
    engine = Engine(model, tok)
    ids = prompt_ids(tok)
    greedy, _ = engine.generate_batch(ids, max_tokens=15, temperature=0.0)
    nucleus, _ = engine.generate_batch(ids, max_tokens=15, temperature=1.5, top_p=1e-6, seed=9)
    assert greedy == nucleus


def test_max_tokens_and_context_limit(model, tok):
    engine = Engine(model, tok)
    ids = prompt_ids(tok)
    steps = list(engine.generate(ids, num_samples=2, max_tokens=5, temperature=0.0))
    assert len(steps) <= 5
    with pytest.raises(ValueError, match="positions"):
        list(engine.generate([tok.bos_id] * engine.max_len, max_tokens=2))


def test_tool_state_on_a_scripted_stream(tok):
    state = ToolState(tok)
    start, end = tok.special_id("<|python_start|>"), tok.special_id("<|python_end|>")
    for t in [start, *tok.encode("'strawberry'.count('r')"), end]:
        assert state.next_forced() is None
        state.observe(t)
    forced = []
    while (t := state.next_forced()) is not None:
        forced.append(t)
        state.observe(t)
    assert forced == [tok.special_id("<|output_start|>"), *tok.encode("3"), tok.special_id("<|output_end|>")]
    assert state.calls == [("'strawberry'.count('r')", "3")]
    assert not state.done
    state.observe(tok.special_id("<|assistant_end|>"))
    assert state.done


def test_tool_refuses_malicious_expression(tok):
    state = ToolState(tok)
    state.observe(tok.special_id("<|python_start|>"))
    for t in tok.encode("__import__('os').system('rm -rf /')"):
        state.observe(t)
    state.observe(tok.special_id("<|python_end|>"))
    text = tok.decode(list(iter(state.next_forced, None)))
    assert text.startswith("<|output_start|>error: ") and "not allowed" in text


def conversation_ids(tok, question, answer_parts):
    """bos, user turn, assistant turn made of text and (python, output) parts, assistant end."""
    ids = prompt_ids(tok, question)
    for kind, text in answer_parts:
        if kind == "text":
            ids += tok.encode(text)
        else:
            open_, close = ("<|python_start|>", "<|python_end|>") if kind == "python" else ("<|output_start|>", "<|output_end|>")
            ids += [tok.special_id(open_), *tok.encode(text), tok.special_id(close)]
    return ids + [tok.special_id("<|assistant_end|>")]


def test_real_model_stops_at_assistant_end(tok):
    sequence = conversation_ids(tok, "hello", [("text", "I am fine, thank you.")])
    model = memorize(random_gpt(tok.vocab_size, seed=1), sequence)
    prompt = prompt_ids(tok, "hello")
    steps = list(Engine(model, tok).generate(prompt, max_tokens=50, temperature=0.0))
    assert steps[-1][0] == [tok.special_id("<|assistant_end|>")]
    assert len(steps) == len(sequence) - len(prompt)
    out, masks = Engine(model, tok).generate_batch(prompt, max_tokens=50, temperature=0.0)
    assert out[0] == sequence[:-1]  # the stop token is left out
    assert masks[0] == [0] * len(prompt) + [1] * (len(sequence) - len(prompt) - 1)


def test_real_model_tool_call_gets_calculator_output(tok):
    # The training sequence carries a wrong tool output (41): what comes back must be the calculator's.
    parts = [("text", "it is "), ("python", "6*7"), ("output", "41"), ("text", " so 42.")]
    sequence = conversation_ids(tok, "what is 6*7?", parts)
    model = memorize(random_gpt(tok.vocab_size, seed=2), sequence)
    prompt = prompt_ids(tok, "what is 6*7?")
    out, masks = Engine(model, tok).generate_batch(prompt, num_samples=2, max_tokens=40, temperature=0.0)
    text = tok.decode(out[0][len(prompt):])
    assert text.startswith("it is <|python_start|>6*7<|python_end|><|output_start|>42<|output_end|>")
    forced = [t for t, m in zip(out[0][len(prompt):], masks[0][len(prompt):]) if m == 0]
    assert forced == [tok.special_id("<|output_start|>"), *tok.encode("42"), tok.special_id("<|output_end|>")]
    assert out[0] == out[1]
    # batched with another prompt of a different length: the same tool call and output
    (tokens, many_masks), _ = Engine(model, tok).generate_many([prompt, prompt_ids(tok, "hi")], max_tokens=40, temperature=0.0)
    assert tokens == out[0][len(prompt):] and many_masks == masks[0][len(prompt):]
