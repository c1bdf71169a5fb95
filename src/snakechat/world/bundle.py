"""A CORE-format eval bundle drawn from the built-in world (`snakechat.world.entities`).

Writes the layout of the real DCLM bundle, so the CORE evaluator reads both the same way:

    <out_dir>/core.yaml              icl_tasks: label, dataset_uri, num_fewshot, icl_task_type,
                                     continuation_delimiter
    <out_dir>/eval_data/<category>/<label>.jsonl
    <out_dir>/eval_meta_data.csv     Eval Task, Task Category, Task Type, #shots, #datapoints,
                                     Random baseline (percent), Centered Metric?, Description

The questions are asked in the phrasings the corpus uses ("Question: ...\\nAnswer: v",
"<name> lives in <town>.", "7 + 5 = 12", "Copy the words: ...\\nCopy: ..."), so a tiny model
that read the corpus can beat the random baselines. `world_two_hop` is the hard one: it asks
for two facts chained, which the corpus never asks and states together only in passing.
Called by `snakechat.eval_bundle`.
"""

import csv
import io
import json
import random
from pathlib import Path

import yaml

from snakechat.world import phrases
from snakechat.world import skills
from snakechat.runtime.common import write_text_atomic
from snakechat.world.entities import COUNTRY_NAMES, Fact, build_world

MC_DELIMITER = "\nAnswer: "


def _rng(seed, label):
    return random.Random(f"snakechat-world/{seed}/bundle/{label}")


def _mc_item(query, gold, wrong, rng):
    choices = [gold] + list(wrong)
    rng.shuffle(choices)
    return {"query": query, "choices": choices, "gold": choices.index(gold)}


def world_facts(world, rng):
    """Attributes of people and towns, asked in the corpus's quiz form, with 4 choices."""
    attrs = ("home_town", "job", "colour", "pet", "food", "country", "river")
    return [_mc_item(f"Question: {phrases.question(world, f, rng)}", f.value, phrases.distractors(world, f, rng, 3), rng)
            for f in world.facts() if f.attr in attrs]


def world_relations(world, rng):
    """Best friends and siblings (who share a family name), in each question phrasing."""
    items = []
    for f in world.facts():
        if f.attr in ("friend", "sibling"):
            for index in range(len(phrases.QUESTIONS[f.attr])):
                query = f"Question: {phrases.question(world, f, index=index)}"
                items.append(_mc_item(query, f.value, phrases.distractors(world, f, rng, 3), rng))
    return items


def world_facts_lm(world, rng):
    """Fact completion in the canonical form: "Anna Reed lives in" -> "Brindle"."""
    attrs = ("home_town", "job", "colour", "pet", "food", "age", "friend", "sibling", "country", "river")
    return [{"context": phrases.canonical_context(world, f), "continuation": f.value}
            for f in world.facts() if f.attr in attrs]


def world_two_hop(world, rng):
    """Two facts chained: person -> town -> country or river, person -> friend -> town."""
    items = []
    for p in world.people:
        town = world.town(p.home_town)
        friend = world.person(p.friend)
        countries = [c for c in COUNTRY_NAMES if c != town.country]
        rivers = [r for r in world.values("river") if r != town.river]
        towns = [t.name for t in world.towns if t.name != friend.home_town]
        items.append(_mc_item(f"Question: In which country does {p.name} live?", town.country,
                              rng.sample(countries, 3), rng))
        items.append(_mc_item(f"Question: Which river flows through the home town of {p.name}?",
                              town.river, rng.sample(rivers, 3), rng))
        items.append(_mc_item(f"Question: In which town does the best friend of {p.name} live?",
                              friend.home_town, rng.sample(towns, 3), rng))
    return items


def world_schema(world, rng):
    """Which of two people makes the shared continuation true: "Anna Reed lives in" / "Tom Hale
    lives in" + "Brindle."."""
    items = []
    for f in world.facts():
        if f.attr not in ("home_town", "job", "colour", "pet", "food"):
            continue
        others = [p for p in world.people if str(getattr(p, f.attr)) != f.value]
        other = Fact(rng.choice(others).name, f.attr, f.value)
        options = [phrases.canonical_context(world, f), phrases.canonical_context(world, other)]
        gold = rng.randrange(2)
        if gold == 1:
            options.reverse()
        items.append({"context_options": options, "continuation": f"{f.value}.", "gold": gold})
    return items


def _distinct_problems(rng, n):
    seen, problems = set(), []
    while len(problems) < n:
        a, op, b, r = skills.arithmetic_problem(rng)
        if (a, op, b) not in seen:
            seen.add((a, op, b))
            problems.append((a, op, b, r))
    return problems


def arithmetic_mc(world, rng):
    """"What is 7 plus 5?" with the answer among three nearby numbers."""
    items = []
    for a, op, b, r in _distinct_problems(rng, 200):
        near = [x for x in range(max(0, r - 6), r + 7) if x != r]
        query = f"Question: {skills.arithmetic_question(a, op, b)}"
        items.append(_mc_item(query, str(r), [str(x) for x in rng.sample(near, 3)], rng))
    return items


def arithmetic_lm(world, rng):
    """"7 + 5 =" -> "12" (sums and products of numbers up to 10, and the differences undoing the sums)."""
    return [{"context": f"{a} {op} {b} =", "continuation": str(r)} for a, op, b, r in _distinct_problems(rng, 200)]


def copy_words(world, rng):
    """Repeat 3-6 world words: "Copy the words: red owl Brindle\\nCopy:" -> "red owl Brindle"."""
    items = []
    for _ in range(200):
        seq = skills.copy_words(world, rng)
        items.append({"context": f"Copy the words: {seq}\nCopy:", "continuation": seq})
    return items


# label, category, task type, builder, few-shot, continuation delimiter, random baseline (percent)
TASKS = [
    ("world_facts", "world_knowledge", "multiple_choice", world_facts, 3, MC_DELIMITER, 25),
    ("world_relations", "world_knowledge", "multiple_choice", world_relations, 3, MC_DELIMITER, 25),
    ("world_facts_lm", "world_knowledge", "language_modeling", world_facts_lm, 5, " ", 0),
    ("world_two_hop", "world_knowledge", "multiple_choice", world_two_hop, 3, MC_DELIMITER, 25),
    ("world_schema", "language_understanding", "schema", world_schema, 0, " ", 50),
    ("arithmetic_mc", "symbolic_problem_solving", "multiple_choice", arithmetic_mc, 3, MC_DELIMITER, 25),
    ("arithmetic_lm", "symbolic_problem_solving", "language_modeling", arithmetic_lm, 5, " ", 0),
    ("copy_words", "symbolic_problem_solving", "language_modeling", copy_words, 3, " ", 0),
]


def write_bundle(out_dir, seed):
    """Write the bundle for the world of `seed` into `out_dir`; core.yaml is written last.

    Returns {label: number of items}.
    """
    out_dir = Path(out_dir)
    world = build_world(seed)
    icl_tasks, meta_rows, counts = [], [], {}
    for label, category, task_type, build, shots, delimiter, baseline in TASKS:
        items = build(world, _rng(seed, label))
        uri = f"{category}/{label}.jsonl"
        write_text_atomic(out_dir / "eval_data" / uri, "".join(json.dumps(item) + "\n" for item in items))
        icl_tasks.append({"label": label, "dataset_uri": uri, "num_fewshot": [shots],
                          "icl_task_type": task_type, "continuation_delimiter": delimiter})
        meta_rows.append([label, category.replace("_", " "), task_type.replace("_", " "), shots,
                          len(items), baseline, "", " ".join(build.__doc__.split())])
        counts[label] = len(items)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["Eval Task", "Task Category", "Task Type", "#shots", "#datapoints",
                     "Random baseline", "Centered Metric?", "Description"])
    writer.writerows(meta_rows)
    write_text_atomic(out_dir / "eval_meta_data.csv", table.getvalue())
    write_text_atomic(out_dir / "core.yaml", yaml.safe_dump({"icl_tasks": icl_tasks}, sort_keys=False))
    return counts
