"""Chat data drawn from the built-in world (`snakechat.world.entities`), in the unified task format.

    <out_dir>/tasks.json                 {"tasks": {task: {"kind", "splits", "random_baseline", "format": "world"}}}
    <out_dir>/<task>/train.jsonl, test.jsonl

Tasks: conversations about the world's facts (some multi-turn), arithmetic with calculator tool
calls, identity ("who are you?" -> snakechat), multiple-choice questions in ARC/MMLU form, word
problems in GSM8K form, and spelling/counting problems (GSM8K form, counted with the tool).
The items are the world's own; they are rendered and scored by the rules of `snakechat.evaluate.tasks`
(nanochat's multiple-choice prompt, "#### N" answers), and chat_eval labels their scores "world"
(format "world" in tasks.json), never as the published benchmarks.

Train and test never share an item: every generated item carries keys (its questions, or its
calculation), the test split is drawn first with distinct keys, and a train item is kept only if
none of its keys is a test key. Questions about the world go further: a fixed third of the facts
(`held_out_facts`) is asked about only in test splits. Called by `snakechat.chat_data`.
"""

import json
import random
from functools import lru_cache
from pathlib import Path

from snakechat.world import phrases
from snakechat.world import skills
from snakechat.evaluate.tasks import write_tasks
from snakechat.runtime.common import write_text_atomic
from snakechat.world.entities import build_world

# ---------------------------------------------------------------------------------------------
# World facts as conversations

FOLLOW_UPS = {  # (question about "him/her", answer), for a second question about the same person
    "home_town": ("And where does {he} live?", "{He} lives in {v}."),
    "job": ("What does {he} do for work?", "{He} works as a {v}."),
    "colour": ("What about {his} favourite colour?", "{His} favourite colour is {v}."),
    "pet": ("Does {he} have a pet?", "Yes, {he} has a pet {v}."),
    "food": ("And what does {he} like to eat?", "{He} likes {v} best."),
    "age": ("How old is {he}?", "{He} is {v} years old."),
    "friend": ("Who is {his} best friend?", "{His} best friend is {v}."),
    "sibling": ("Does {he} have a brother or a sister?", "Yes, {his} {rel} is {v}."),
}
NO_SIBLING = "No, {he} has no brothers or sisters."
GREETINGS = ["", "", "", "Hi! ", "Hello. ", "Hey! ", "Quick question: ", "Good morning! "]
SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are snakechat. Answer briefly and truthfully."]


def _pronouns(p):
    return {"he": p.he, "his": p.his, "him": p.him, "He": p.he.capitalize(), "His": p.his.capitalize()}


HELD_OUT_FRACTION = 1 / 3


@lru_cache(maxsize=8)
def held_out_facts(seed):
    """The facts that only test splits ask about: a fixed third of the world's facts.

    Every fact is in the pretraining corpus; chat training never asks about these ones, so a
    test question checks that fine-tuning taught the format, not the answer.
    """
    facts = build_world(seed).facts()
    rng = random.Random(f"snakechat-world/{seed}/chat/held-out")
    return frozenset(rng.sample(facts, round(len(facts) * HELD_OUT_FRACTION)))


def split_facts(world, split):
    """The facts a split may ask about, in the world's order."""
    held = held_out_facts(world.seed)
    return [f for f in world.facts() if (f in held) == (split == "test")]


def world_chat(world, rng, split):
    """1-3 questions about people and towns; follow-ups ask about the same person by pronoun."""
    facts = split_facts(world, split)
    allowed = {(f.subject, f.attr) for f in facts}
    messages, keys, p = [], [], None
    if rng.random() < 0.2:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    for turn in range(rng.choice([1, 1, 2, 3])):
        follow_ups = [a for a in FOLLOW_UPS if (p.name, a) in allowed] if p else []
        if p and p.sibling is None and split == "train":
            follow_ups.append("sibling")  # "she has no brothers or sisters" is not a held-out fact
        if follow_ups and rng.random() < 0.6:
            attr = rng.choice(follow_ups)
            ask, say = FOLLOW_UPS[attr]
            value = getattr(p, attr)
            fields = dict(_pronouns(p), v=value, rel="")
            if value is None:
                say = NO_SIBLING
            elif attr == "sibling":
                fields["rel"] = world.person(value).sibling_word
            user, reply = ask.format(**fields), say.format(**fields)
            keys.append(f"{p.name}|{user}")
        else:
            fact = rng.choice(facts)
            p = world.person(fact.subject) if world.is_person(fact.subject) else None
            user = phrases.question(world, fact, rng)
            keys.append(user)
            user = (rng.choice(GREETINGS) if turn == 0 else "") + user
            reply = phrases.statement(world, fact, rng)
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return keys, {"messages": messages}


# ---------------------------------------------------------------------------------------------
# Arithmetic with the calculator tool

ASK_ARITHMETIC = ["What is {a} {word} {b}?", "Can you compute {a} {op} {b}?", "Calculate {a} {word} {b}, please.",
                  "How much is {a} {word} {b}?", "{a} {op} {b} = ?"]


def _calculation(rng):
    """Numbers big enough that the tool is worth calling, small enough for a tiny model to copy."""
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(2, 99), rng.randint(2, 30)
    else:
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        if op == "-" and b > a:
            a, b = b, a
    return a, op, b, skills.OPERATORS[op][1](a, b)


def arithmetic_tool(world, rng, split):
    """One or two calculations; the assistant calls the calculator, then states the result."""
    messages, keys = [], []
    for _ in range(rng.choice([1, 1, 1, 2])):
        a, op, b, r = _calculation(rng)
        word = skills.OPERATORS[op][0]
        keys.append(f"{a}{op}{b}")
        user = rng.choice(ASK_ARITHMETIC).format(a=a, b=b, op=op, word=word)
        reply = [{"type": "text", "text": rng.choice(["Let me calculate that. ", "Using the calculator: ", ""])},
                 {"type": "python", "text": f"{a}{op}{b}"},
                 {"type": "python_output", "text": str(r)},
                 {"type": "text", "text": f"{a} {word} {b} is {r}."}]
        if not reply[0]["text"]:
            reply = reply[1:]
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return keys, {"messages": messages}


# ---------------------------------------------------------------------------------------------
# Identity

IDENTITY = {  # intent -> (questions, answers)
    "who": (["Who are you?", "What are you?", "Tell me about yourself.", "What is your name?",
             "What should I call you?", "Introduce yourself.", "Are you a person?"],
            ["I am snakechat, a small language model. I am not a person; I answer questions in text.",
             "My name is snakechat. I am a small chat model, trained from scratch.",
             "I'm snakechat, a small language model that can chat, do arithmetic with a calculator and answer questions."]),
    "made": (["Who made you?", "How were you trained?", "Who built you?", "How were you made?",
              "Where do you come from?"],
             ["I was trained with snakechat, a Snakemake pipeline that builds a chat model end to end: "
              "tokenizer, pretraining, mid-training, supervised fine-tuning and reinforcement learning.",
              "A Snakemake workflow trained me, stage by stage: first a tokenizer, then pretraining on text, "
              "then fine-tuning on conversations like this one."]),
    "can": (["What can you do?", "What do you know about?", "What are you good at?"],
            ["I can answer questions about what I read during training, do arithmetic with a "
             "calculator, count letters in words and solve small word problems.",
             "I can chat, answer simple questions and do maths with a calculator. I am small, so I make mistakes."]),
    "size": (["Are you a large model?", "How big are you?", "Are you ChatGPT?"],
             ["No, I am snakechat, a small model. I am much smaller than the big chat assistants, so I make mistakes.",
              "I am a small model called snakechat, trained on modest hardware, so check what I say."]),
}
IDENTITY_GREETINGS = ["", "Hi! ", "Hello. ", "Hey! ", "Good morning! ", "Hello there. "]


def identity(world, rng, split):
    """Who the assistant is: a question about itself, sometimes followed by a second one."""
    messages, keys = [], []
    for turn, intent in enumerate(rng.sample(list(IDENTITY), rng.choice([1, 1, 2]))):
        questions, answers = IDENTITY[intent]
        user = (rng.choice(IDENTITY_GREETINGS) if turn == 0 else "") + rng.choice(questions)
        if rng.random() < 0.3:
            user = user.lower()
        keys.append(user)
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": rng.choice(answers)}]
    return keys, {"messages": messages}


# ---------------------------------------------------------------------------------------------
# Multiple choice, word problems, spelling

def world_mc(world, rng, split):
    """ARC/MMLU-form question about a world fact, four choices."""
    fact = rng.choice([f for f in split_facts(world, split) if f.attr not in ("population", "landmark")])
    q = phrases.question(world, fact, rng)
    choices = [fact.value] + phrases.distractors(world, fact, rng, 3)
    rng.shuffle(choices)
    subject = "people" if world.is_person(fact.subject) else "places"
    return [q], {"question": q, "choices": choices, "answer": choices.index(fact.value), "subject": subject}


def word_problems(world, rng, split):
    """GSM8K-form word problem about a world person (1-2 steps, <<expr=result>> annotations)."""
    q, a, _ = skills.word_problem(world, rng)
    return [q], {"question": q, "answer": a}


def spelling(world, rng, split):
    """How many letters (or how many of one letter) in a word; spelled out, then counted with the tool."""
    word = rng.choice(skills.spelling_words(world))
    spelled = skills.spelled(word)
    if rng.random() < 0.3:
        q = rng.choice(["How many letters does the word '{w}' have?", "How long is the word '{w}' in letters?"])
        q = q.format(w=word)
        n = len(word)
        a = f"Spelled out, '{word}' is {spelled}. Counting the letters: <<len('{word}')={n}>>{n}.\n#### {n}"
    else:
        c = rng.choice(word) if rng.random() < 0.85 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        q = rng.choice(["How many letters {c} are in the word '{w}'?", "How many times does the letter {c} appear in '{w}'?",
                        "Count the letter {c} in the word '{w}'."]).format(c=c, w=word)
        n = word.count(c)
        a = f"Spelled out, '{word}' is {spelled}. Counting the letter {c}: <<'{word}'.count('{c}')={n}>>{n}.\n#### {n}"
    return [q], {"question": q, "answer": a}


# task, kind, builder, train size, test size, random baseline
TASKS = [
    ("world_chat", "conversation", world_chat, 4000, 100, 0.0),
    ("arithmetic_tool", "conversation", arithmetic_tool, 2000, 200, 0.0),
    ("identity", "conversation", identity, 1000, 40, 0.0),
    ("world_mc", "mc", world_mc, 1500, 100, 0.25),
    ("word_problems", "gsm8k", word_problems, 2000, 200, 0.0),
    ("spelling", "gsm8k", spelling, 1500, 200, 0.0),
]


def make_splits(world, seed, task, build, n_train, n_test):
    """(train, test) records: test items with distinct keys first, then train items that share
    no key with any test item (train may repeat itself)."""
    test_keys, test, train = set(), [], []
    rng = random.Random(f"snakechat-world/{seed}/chat/{task}/test")
    for _ in range(100 * n_test):
        if len(test) == n_test:
            break
        keys, record = build(world, rng, "test")
        if not test_keys.intersection(keys) and len(set(keys)) == len(keys):
            test_keys.update(keys)
            test.append(record)
    rng = random.Random(f"snakechat-world/{seed}/chat/{task}/train")
    for _ in range(100 * n_train):
        if len(train) == n_train:
            break
        keys, record = build(world, rng, "train")
        if not test_keys.intersection(keys):
            train.append(record)
    if len(test) < n_test or len(train) < n_train:
        raise RuntimeError(f"chat task {task!r}: made only {len(train)}/{n_train} train and "
                           f"{len(test)}/{n_test} test items")
    return train, test


def write_chat_data(out_dir, seed):
    """Write every task's splits for the world of `seed` into `out_dir`; tasks.json is written last.

    Returns {task: {"train": n, "test": n}}.
    """
    out_dir = Path(out_dir)
    world = build_world(seed)
    tasks, counts = {}, {}
    for task, kind, build, n_train, n_test, baseline in TASKS:
        train, test = make_splits(world, seed, task, build, n_train, n_test)
        splits = {}
        for split, records in (("train", train), ("test", test)):
            splits[split] = f"{task}/{split}.jsonl"
            write_text_atomic(out_dir / splits[split], "".join(json.dumps(r) + "\n" for r in records))
        tasks[task] = {"kind": kind, "splits": splits, "random_baseline": baseline, "format": "world"}
        counts[task] = {"train": len(train), "test": len(test)}
    write_tasks(out_dir, tasks)
    return counts
