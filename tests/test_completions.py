"""POST /v1/completions on a base checkpoint (issue 32.2): the real server, the official client's
`client.completions.create`, streamed or not, compared with the engine called directly."""

import openai
import pytest

from chat_server import serving
from snakechat.model.checkpoint import save_checkpoint
from snakechat.serve.chat_model import load_engine
from snakechat.serve.reply import Reply
from tiny_chat_model import memorize, one_torch_thread, random_gpt, tokenizer  # noqa: F401 (autouse fixture)

MODEL = "snakechat-tiny-base"
DOCUMENT = "what is 6*7? it is 42. so the answer is 42."
PROMPT = "what is 6*7? it is"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A tiny base model that has learnt one document, <|bos|> to <|bos|>, saved as results/base/tiny."""
    root = tmp_path_factory.mktemp("base")
    tok = tokenizer()
    tok.save(root / "tok")
    model = memorize(random_gpt(tok.vocab_size, seed=3), tok.encode(DOCUMENT, prepend=tok.bos_id) + [tok.bos_id])
    directory = root / "results" / "base" / "tiny"
    save_checkpoint(directory, model, {"model_config": model.config.to_dict(), "tokenizer": str(root / "tok"), "step": 0})
    return load_engine(directory)


@pytest.fixture(scope="module")
def server(engine):
    with serving(engine, name=MODEL) as chat:
        yield chat


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def direct(engine, ids, **settings):
    reply = Reply(engine[0], ids, **{"max_tokens": 16, "temperature": 0.0, **settings})
    list(reply)
    return reply


def test_completion_continues_the_prompt(client, engine):
    _, tok = engine
    done = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=30, temperature=0)
    assert done.object == "text_completion" and done.model == MODEL and done.id.startswith("cmpl-")
    (choice,) = done.choices
    assert choice.index == 0 and choice.finish_reason == "stop"  # the model ends the document with <|bos|>
    assert choice.text == DOCUMENT[len(PROMPT):]
    ids = tok.encode(PROMPT, prepend=tok.bos_id)
    reply = direct(engine, ids, max_tokens=30)
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (len(ids), len(reply.tokens))
    short = client.completions.create(model=MODEL, prompt=PROMPT, temperature=0)  # OpenAI's default: 16 tokens
    assert short.usage.completion_tokens == min(16, len(reply.tokens))


def test_streamed_completion_matches_the_whole_one(client):
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=30, temperature=0).choices[0].text
    text, chunks = "", list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=30, temperature=0, stream=True, stream_options={"include_usage": True}))
    for chunk in chunks[:-1]:
        assert chunk.object == "text_completion" and len(chunk.choices) == 1
        text += chunk.choices[0].text
    assert text == whole and sum(bool(c.choices and c.choices[0].text) for c in chunks) > 3
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 3


def test_prompts_as_lists_and_token_ids(client, engine):
    _, tok = engine
    ids = tok.encode(PROMPT, prepend=tok.bos_id)
    one = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0).choices[0]
    batch = client.completions.create(model=MODEL, prompt=[PROMPT, "what is"], max_tokens=5, temperature=0)
    assert [c.index for c in batch.choices] == [0, 1] and batch.choices[0].text == one.text
    assert batch.choices[1].text == direct(engine, tok.encode("what is", prepend=tok.bos_id), max_tokens=5).parts[0]["text"]
    assert client.completions.create(model=MODEL, prompt=ids, max_tokens=5, temperature=0).choices[0].text == one.text
    assert [c.text for c in client.completions.create(model=MODEL, prompt=[ids, ids], max_tokens=5, temperature=0).choices] == [one.text] * 2
    stopped = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=30, temperature=0, stop=[" so"])
    assert stopped.choices[0].text == " 42." and stopped.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    "settings, error, param",
    [
        ({"model": "gpt-3.5-turbo-instruct"}, openai.NotFoundError, "model"),
        ({"echo": True}, openai.BadRequestError, "echo"),
        ({"logprobs": 1}, openai.BadRequestError, "logprobs"),
        ({"n": 2}, openai.BadRequestError, "n"),
        ({"prompt": []}, openai.BadRequestError, "prompt"),
        ({"prompt": [10**6]}, openai.BadRequestError, "prompt"),
        ({"prompt": [PROMPT, PROMPT], "stream": True}, openai.BadRequestError, "prompt"),
        ({"max_tokens": 41}, openai.BadRequestError, "max_tokens"),
    ],
)
def test_completion_errors(client, settings, error, param):
    with pytest.raises(error) as caught:
        client.completions.create(**{"model": MODEL, "prompt": PROMPT, **settings})
    assert caught.value.param == param


def test_chat_endpoint_serves_a_base_checkpoint_too(client):
    """Its tokenizer has the chat tokens, so a chat request is served (a base model has not learnt to answer)."""
    done = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0)
    assert isinstance(done.choices[0].message.content, str) and done.usage.completion_tokens <= 3
