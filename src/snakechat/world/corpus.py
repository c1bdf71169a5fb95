"""The pretraining corpus of the built-in world, `corpus_documents(seed, n_docs, offset=0)`: nine
kinds of document (profiles, fact sheets, registers, towns, quizzes, stories, dialogues, arithmetic,
words). Each builder writes one kind from (world, rng) and keeps adding sections until the document
reaches its target length; each document depends only on (seed, index)."""

import random

from snakechat.world.entities import Fact, build_world
from snakechat.world.phrases import FIRST_PERSON, canonical_statement, question, relation_word, statement
from snakechat.world.skills import (ARITHMETIC_MAX, OPERATORS, arithmetic_problem, arithmetic_question, copy_words,
                                    number_word, spelled, spelling_words, strip_annotations, word_problem)

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _doc_profile(world, rng, target):
    parts = []
    p = rng.choice(world.people)
    while sum(map(len, parts)) < target:
        facts = world.facts_about(p.name)
        rng.shuffle(facts)
        lines = [statement(world, f, rng, subject=rng.choice([p.name, p.name, p.first]) if i else p.name)
                 for i, f in enumerate(facts)]
        parts.append(f"About {p.name}\n" + " ".join(lines) + "\n\n")
        p = world.person(rng.choice([p.friend, p.sibling or p.friend, rng.choice(world.people).name]))
    return "".join(parts).strip()


def _doc_fact_sheet(world, rng, target):
    facts = world.facts()
    lines = [rng.choice(["Facts about the world:", "Things to remember:", "Notes:", "Fact list"])]
    while sum(map(len, lines)) < target:
        f = rng.choice(facts)
        lines.append(canonical_statement(world, f) if rng.random() < 0.7 else statement(world, f, rng))
    return "\n".join(lines)


def _doc_record(world, rng, target):
    labels = {"home_town": "Home town", "job": "Job", "colour": "Favourite colour", "pet": "Pet",
              "food": "Favourite food", "age": "Age", "friend": "Best friend", "sibling": "Sibling"}
    parts = []
    while sum(map(len, parts)) < target:
        p = rng.choice(world.people)
        rows = [f"Name: {p.name}"] + [f"{labels[f.attr]}: {f.value}" for f in world.facts_about(p.name)]
        parts.append("\n".join(rows) + "\n\n")
    return "Town register\n\n" + "".join(parts).strip()


def _doc_town(world, rng, target):
    parts = []
    t = rng.choice(world.towns)
    while sum(map(len, parts)) < target:
        facts = world.facts_about(t.name)
        rng.shuffle(facts)
        text = " ".join(statement(world, f, rng) for f in facts)
        residents = [p for p in world.people if p.home_town == t.name]
        if residents:
            text += " " + " ".join(f"{p.name} lives in {t.name} and works as a {p.job}."
                                   for p in rng.sample(residents, len(residents)))
        parts.append(f"{t.name}\n{text}\n\n")
        t = rng.choice(world.towns)
    return "".join(parts).strip()


def _doc_quiz(world, rng, target):
    facts = world.facts()
    parts = [rng.choice(["Quiz", "Questions and answers", "Test yourself", "Practice questions"]) + "\n\n"]
    while sum(map(len, parts)) < target:
        roll = rng.random()
        if roll < 0.7:
            f = rng.choice(facts)
            parts.append(f"Question: {question(world, f, rng)}\nAnswer: {f.value}\n\n")
        elif roll < 0.85:
            f = rng.choice(facts)
            parts.append(f"Q: {question(world, f, rng)}\nA: {statement(world, f, rng)}\n\n")
        else:
            a, op, b, r = arithmetic_problem(rng)
            parts.append(f"Question: {arithmetic_question(a, op, b)}\nAnswer: {r}\n\n")
    return "".join(parts).strip()


def _story_sentences(world, p, rng):
    t = world.town(p.home_town)
    f = world.person(p.friend)
    he, his = p.he.capitalize(), p.his.capitalize()
    day = rng.choice(DAYS)
    opening = rng.choice([
        f"On a {day} morning, {p.name} woke up early in {t.name}.",
        f"Once upon a time, in the town of {t.name}, there lived a {p.job} called {p.name}.",
        f"{p.name} lives in {t.name}, a town in {t.country}. This is a story about {p.him}.",
        f"It was a quiet {day} in {t.name}, and {p.name} had a lot to do.",
    ])
    middle = [
        f"{he} took {p.his} {p.pet} for a walk along the river {t.river}.",
        f"{he} put on {p.his} {p.colour} coat, because {p.colour} is {p.his} favourite colour.",
        f"{p.first} went to work, because {p.first} works as a {p.job}.",
        f"At lunch {p.he} ate {p.food}, {p.his} favourite food.",
        f"Then {p.he} visited {p.his} best friend {f.name}, who lives in {f.home_town}.",
        f"{f.first} works as a {f.job}, and the two friends talked for hours.",
        f"{f.first} had brought {f.his} {f.pet}, and the {f.pet} and the {p.pet} played together.",
        f"On the way home {p.he} walked past the {t.landmark} of {t.name}.",
        f"{p.first} is {p.age} years old, and {p.he} still loves a long walk.",
        f"{his} neighbours in {t.name} waved as {p.he} passed.",
    ]
    if p.sibling:
        s = world.person(p.sibling)
        rel = s.sibling_word
        middle += [f"Later {p.he} wrote a letter to {p.his} {rel} {s.name} in {s.home_town}.",
                   f"{s.first}, the {rel} of {p.first}, works as a {s.job}."]
    rng.shuffle(middle)
    ending = rng.choice([f"In the evening {p.he} went home to {t.name}, happy and tired.",
                         f"And that was a good day for {p.name}.",
                         f"When the sun set over {t.name}, {p.first} went to sleep."])
    return [opening] + middle[:rng.randint(4, len(middle))] + [ending]


def _doc_story(world, rng, target):
    parts = []
    while sum(map(len, parts)) < target:
        parts.append(" ".join(_story_sentences(world, rng.choice(world.people), rng)) + "\n\n")
    return "".join(parts).strip()


def _doc_dialogue(world, rng, target):
    a = rng.choice(world.people)
    b = world.person(a.friend) if rng.random() < 0.5 else rng.choice([p for p in world.people if p != a])
    lines = [f"{a.first}: Hello {b.first}! How are you?",
             f"{b.first}: Very well, thank you, {a.first}."]
    asked = set()  # (person, attr) already answered, so no question comes twice
    while sum(map(len, lines)) < target:
        asker, answerer = (a, b) if rng.random() < 0.5 else (b, a)
        attrs = [x for x in FIRST_PERSON if getattr(answerer, x) is not None and (answerer.name, x) not in asked]
        if attrs and rng.random() < 0.6:
            attr = rng.choice(attrs)
            asked.add((answerer.name, attr))
            fact = Fact(answerer.name, attr, str(getattr(answerer, attr)))
            ask, say = FIRST_PERSON[attr]
            lines.append(f"{asker.first}: {ask}")
            lines.append(f"{answerer.first}: " + say.format(v=fact.value, rel=relation_word(world, fact)))
        else:
            other = rng.choice(world.people)
            fact = rng.choice(world.facts_about(other.name))
            lines.append(f"{asker.first}: Do you know {other.name}? {question(world, fact, rng)}")
            lines.append(f"{answerer.first}: Yes. {statement(world, fact, rng)}")
    lines.append(f"{a.first}: Goodbye, {b.first}!")
    return "\n".join(lines)


def _doc_arithmetic(world, rng, target):
    parts = []
    while sum(map(len, parts)) < target:
        kind = rng.randrange(5)
        if kind == 0:
            eqs = [arithmetic_problem(rng) for _ in range(rng.randint(4, 10))]
            parts.append("\n".join(f"{a} {op} {b} = {r}" for a, op, b, r in eqs))
        elif kind == 1:
            sents = []
            for _ in range(rng.randint(3, 6)):
                a, op, b, r = arithmetic_problem(rng)
                if op != "*" and max(a, b, r) <= 20:
                    sents.append(f"{number_word(a).capitalize()} {OPERATORS[op][0]} {number_word(b)} "
                                 f"equals {number_word(r)}.")
                else:
                    sents.append(f"{arithmetic_question(a, op, b)} {a} {OPERATORS[op][0]} {b} is {r}.")
            parts.append(" ".join(sents))
        elif kind == 2:
            k, op = rng.randint(2, ARITHMETIC_MAX), rng.choice("+*")
            name = "times" if op == "*" else "addition"
            rows = [f"{i} {op} {k} = {OPERATORS[op][1](i, k)}" for i in range(1, ARITHMETIC_MAX + 1)]
            parts.append(f"The {k} {name} table:\n" + "\n".join(rows))
        elif kind == 3:
            q, a, _ = word_problem(world, rng)
            parts.append(f"Problem: {q}\nSolution: {strip_annotations(a).replace('#### ', 'The answer is ')}.")
        else:
            a, op, b, r = arithmetic_problem(rng)
            parts.append(f"Question: {arithmetic_question(a, op, b)}\nAnswer: {r}")
        parts[-1] += "\n\n"
    return "".join(parts).strip()


def _doc_words(world, rng, target):
    parts = []
    words = spelling_words(world)
    while sum(map(len, parts)) < target:
        kind = rng.randrange(3)
        if kind == 0:
            seq = copy_words(world, rng)
            parts.append(f"Copy the words: {seq}\nCopy: {seq}")
        elif kind == 1:
            w = rng.choice(words)
            parts.append(f"The word {w} is spelled {spelled(w)}. It has {len(w)} letters.")
        else:
            w = rng.choice(words)
            c = rng.choice(w) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
            k = w.count(c)
            times = "time" if k == 1 else "times"
            parts.append(f"In the word {w} ({spelled(w)}), the letter {c} appears {k} {times}.")
        parts[-1] += "\n\n"
    return "".join(parts).strip()


DOC_KINDS = [  # (builder, weight)
    (_doc_profile, 16), (_doc_fact_sheet, 14), (_doc_record, 6), (_doc_town, 7), (_doc_quiz, 14),
    (_doc_story, 13), (_doc_dialogue, 10), (_doc_arithmetic, 13), (_doc_words, 7),
]
MIN_CHARS, MAX_CHARS = 300, 1800


def document(seed, index):
    """Document number `index` of the corpus for `seed`; depends on nothing else."""
    world = build_world(seed)
    rng = random.Random(f"snakechat-world/{seed}/doc/{index}")
    builders, weights = zip(*DOC_KINDS)
    builder = rng.choices(builders, weights)[0]
    return builder(world, rng, rng.randint(MIN_CHARS, MAX_CHARS))


def corpus_documents(seed, n_docs, offset=0):
    """Yield documents offset, offset+1, ..., offset+n_docs-1 of the corpus for `seed`.

    Each document depends only on (seed, index), so shards can be written independently and
    any slice of the corpus is reproducible.
    """
    if n_docs < 0 or offset < 0:
        raise ValueError(f"corpus_documents: n_docs ({n_docs}) and offset ({offset}) must be >= 0")
    for index in range(offset, offset + n_docs):
        yield document(seed, index)
