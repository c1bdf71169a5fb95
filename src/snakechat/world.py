"""The built-in world: a small seeded universe of people and towns, and the text written about it.

One seed fixes everything: who lives where, what they do, who their friends are. The same world
feeds the pretraining corpus (`corpus_documents`, here), the CORE-format eval bundle
(`snakechat.world_bundle`) and the chat data (`snakechat.world_chat`), so a tiny model that has
read the corpus is tested on exactly the facts it read.

The world is small on purpose (20 people, 8 towns) and every fact is stated many times in varied
phrasings, so a depth-4 model trained for a few CPU minutes can memorise a good part of it.

Determinism: each random choice comes from a `random.Random` seeded with a string naming the seed
and the item (document i, task t, ...); Python seeds from strings with SHA-512, not with the
randomised `hash()`, and nothing here iterates over a set. Same seed => same text everywhere.
"""

import random
import re
from dataclasses import dataclass
from functools import lru_cache

FEMALE_NAMES = ["Anna", "Clara", "Emma", "Grace", "Iris", "Kate", "Maya", "Olive", "Rosa", "Tara",
                "Wendy", "Yara", "Zoe", "Lucy", "Nina", "Ruby", "Elsa", "Hanna", "Lena", "Mira"]
MALE_NAMES = ["Ben", "David", "Felix", "Hugo", "Jack", "Leo", "Noah", "Paul", "Sam", "Victor",
              "Omar", "Ivan", "Owen", "Theo", "Mark", "Carl", "Dan", "Finn", "Karl", "Tom"]
FAMILY_NAMES = ["Reed", "Hale", "Stone", "Brook", "Fisher", "Moss", "Carter", "Lane", "Wood", "Price",
                "Frost", "Hart", "Marsh", "Pike", "Quinn", "Shaw", "Vale", "Webb", "Yates", "Bell",
                "Cole", "Dale", "Gray", "Hill", "Kent", "Lowe"]
TOWN_NAMES = ["Brindle", "Ashford", "Corrin", "Dunmore", "Elmstead", "Fallow", "Greyhaven", "Harrow",
              "Juniper", "Kestrel", "Larkfield", "Millbrook", "Northwick", "Oakham"]
COUNTRY_NAMES = ["Norland", "Estmark", "Valoria", "Sundar"]
RIVER_NAMES = ["Arden", "Blyth", "Cass", "Dove", "Esk", "Fenn"]
# Jobs and pets all start with a consonant, so "works as a ..." never gives the answer away.
JOBS = ["baker", "teacher", "farmer", "doctor", "painter", "pilot", "nurse", "fisher", "carpenter",
        "librarian", "chef", "builder", "potter", "tailor"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
PETS = ["dog", "cat", "parrot", "rabbit", "horse", "goat", "tortoise", "hamster"]
FOODS = ["apples", "soup", "bread", "cheese", "noodles", "plums", "rice", "pancakes"]
LANDMARKS = ["old stone bridge", "busy market", "tall clock tower", "small harbour", "great library",
             "windmill", "ruined castle", "rose garden", "blue lighthouse", "summer fair"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
ITEMS = ["apples", "books", "pencils", "shells", "stamps", "marbles", "eggs", "coins", "cards", "flowers"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                "eighteen", "nineteen", "twenty"]
# Everyday words for the spelling and copying texts, besides the world's own names.
COMMON_WORDS = ["carrot", "banana", "strawberry", "window", "letter", "yellow", "bottle", "river",
                "mirror", "pepper", "balloon", "kitten", "garden", "coffee", "summer", "little",
                "puzzle", "rabbit", "cherry", "butter", "hammer", "pillow", "basket", "tomato",
                "kettle", "orange", "ladder", "pebble", "bubble", "dinner", "giraffe", "sheep"]

N_PEOPLE = 20
N_TOWNS = 8
N_SIBLING_PAIRS = 6

PERSON_ATTRS = ("home_town", "job", "colour", "pet", "food", "age")
RELATIONS = ("sibling", "friend")
TOWN_ATTRS = ("country", "river", "population", "landmark")


@dataclass(frozen=True)
class Person:
    name: str
    first: str
    female: bool
    home_town: str
    job: str
    colour: str
    pet: str
    food: str
    age: int
    friend: str
    sibling: str | None

    @property
    def he(self):
        return "she" if self.female else "he"

    @property
    def his(self):
        return "her" if self.female else "his"

    @property
    def him(self):
        return "her" if self.female else "him"


@dataclass(frozen=True)
class Town:
    name: str
    country: str
    river: str
    population: int
    landmark: str


@dataclass(frozen=True)
class Fact:
    """One true statement about the world: `subject`'s `attr` is `value` (all strings)."""
    subject: str
    attr: str
    value: str


class World:
    """People and towns of one seed, with lookups by name and the list of every fact."""

    def __init__(self, seed, people, towns):
        self.seed = seed
        self.people = people
        self.towns = towns
        self._people = {p.name: p for p in people}
        self._towns = {t.name: t for t in towns}
        self._facts = tuple(self._all_facts())
        self._facts_about = {}
        for f in self._facts:
            self._facts_about.setdefault(f.subject, []).append(f)

    def person(self, name):
        return self._people[name]

    def town(self, name):
        return self._towns[name]

    def is_person(self, name):
        return name in self._people

    def facts(self):
        """Every fact, in a fixed order: people's attributes and relations, then towns'."""
        return list(self._facts)

    def facts_about(self, subject):
        """The facts whose subject is `subject` (a person's or a town's name), in a fixed order."""
        return list(self._facts_about[subject])

    def _all_facts(self):
        facts = []
        for p in self.people:
            for attr in PERSON_ATTRS + RELATIONS:
                value = getattr(p, attr)
                if value is not None:
                    facts.append(Fact(p.name, attr, str(value)))
        for t in self.towns:
            for attr in TOWN_ATTRS:
                facts.append(Fact(t.name, attr, str(getattr(t, attr))))
        return facts

    def values(self, attr):
        """The values `attr` can take (distractors for multiple choice), in a fixed order."""
        pools = {"home_town": [t.name for t in self.towns], "job": JOBS, "colour": COLOURS,
                 "pet": PETS, "food": FOODS, "country": COUNTRY_NAMES, "landmark": LANDMARKS,
                 "river": sorted({t.river for t in self.towns}),
                 "sibling": [p.name for p in self.people], "friend": [p.name for p in self.people],
                 "age": [str(a) for a in range(20, 71)],
                 "population": [str(t.population) for t in self.towns]}
        return list(pools[attr])


@lru_cache(maxsize=8)
def build_world(seed):
    """The world for `seed`: 20 people in 8 towns, with jobs, pets, friends and siblings."""
    rng = random.Random(f"snakechat-world/{seed}/world")
    countries = list(COUNTRY_NAMES)
    rivers = rng.sample(RIVER_NAMES, len(RIVER_NAMES))
    town_names = rng.sample(TOWN_NAMES, N_TOWNS)
    towns = []
    for i, name in enumerate(town_names):
        country = countries[i % len(countries)]  # every country gets at least two towns
        towns.append(Town(name, country, rivers[i % len(rivers)],
                          population=rng.randrange(20, 900) * 100, landmark=rng.choice(LANDMARKS)))

    females = rng.sample(FEMALE_NAMES, N_PEOPLE // 2)
    males = rng.sample(MALE_NAMES, N_PEOPLE - N_PEOPLE // 2)
    firsts = [(n, True) for n in females] + [(n, False) for n in males]
    rng.shuffle(firsts)
    families = rng.sample(FAMILY_NAMES, N_PEOPLE - N_SIBLING_PAIRS)
    # People 2k and 2k+1 (k < N_SIBLING_PAIRS) are siblings and share a family name.
    family_of = [families[i // 2] if i < 2 * N_SIBLING_PAIRS else families[i - N_SIBLING_PAIRS]
                 for i in range(N_PEOPLE)]
    names = [f"{first} {family}" for (first, _), family in zip(firsts, family_of)]
    sibling_of = [None] * N_PEOPLE
    for k in range(N_SIBLING_PAIRS):
        sibling_of[2 * k], sibling_of[2 * k + 1] = names[2 * k + 1], names[2 * k]

    # Best friends: a pairing of everyone, never two siblings.
    while True:
        order = rng.sample(range(N_PEOPLE), N_PEOPLE)
        pairs = [(order[i], order[i + 1]) for i in range(0, N_PEOPLE, 2)]
        if all(sibling_of[a] != names[b] for a, b in pairs):
            break
    friend_of = [None] * N_PEOPLE
    for a, b in pairs:
        friend_of[a], friend_of[b] = names[b], names[a]

    homes = town_names + [rng.choice(town_names) for _ in range(N_PEOPLE - N_TOWNS)]
    rng.shuffle(homes)
    people = [Person(name=names[i], first=firsts[i][0], female=firsts[i][1], home_town=homes[i],
                     job=rng.choice(JOBS), colour=rng.choice(COLOURS), pet=rng.choice(PETS),
                     food=rng.choice(FOODS), age=rng.randint(20, 70), friend=friend_of[i],
                     sibling=sibling_of[i])
              for i in range(N_PEOPLE)]
    return World(seed, people, towns)


# ---------------------------------------------------------------------------------------------
# How facts are put into words. "{s}" is the subject, "{v}" the value; "{rel}" is "sister" or
# "brother" for a sibling. The canonical form is the one the fact-completion eval asks for
# ("{s} lives in" -> "Brindle"), and it is the most frequent form in the corpus.

CANONICAL = {
    "home_town": "{s} lives in",
    "job": "{s} works as a",
    "colour": "The favourite colour of {s} is",
    "pet": "{s} has a pet",
    "food": "The favourite food of {s} is",
    "age": "The age of {s} is",
    "sibling": "The {rel} of {s} is",
    "friend": "The best friend of {s} is",
    "country": "{s} is a town in",
    "river": "{s} lies on the river",
    "population": "The population of {s} is",
    "landmark": "{s} is known for its",
}

STATEMENTS = {
    "home_town": ["The home town of {s} is {v}.", "{s} comes from {v}.", "{s} has a house in {v}.",
                  "{s} lives in the town of {v}."],
    "job": ["The job of {s} is {v}.", "{s} is a {v} by trade.", "By profession, {s} is a {v}."],
    "colour": ["{s} likes {v} more than any other colour.", "The colour {s} loves most is {v}."],
    "pet": ["{s} keeps a {v} as a pet.", "The pet of {s} is a {v}."],
    "food": ["{s} likes to eat {v} more than anything.", "The food {s} loves most is {v}."],
    "age": ["{s} is {v} years old.", "{s} is {v}."],
    "sibling": ["{s} has a {rel} called {v}.", "{s} and {v} are siblings."],
    "friend": ["{s} and {v} are best friends.", "{s} is best friends with {v}."],
    "country": ["The country of {s} is {v}.", "{s} is in {v}."],
    "river": ["The river {v} flows through {s}.", "{s} is built on the river {v}."],
    "population": ["{s} has {v} people.", "About {v} people live in {s}."],
    "landmark": ["{s} is famous for its {v}.", "The pride of {s} is its {v}."],
}

QUESTIONS = {
    "home_town": ["Where does {s} live?", "What is the home town of {s}?", "In which town does {s} live?"],
    "job": ["What is the job of {s}?", "What does {s} do for a living?", "What work does {s} do?"],
    "colour": ["What is the favourite colour of {s}?", "Which colour does {s} like best?"],
    "pet": ["What pet does {s} have?", "Which animal does {s} keep as a pet?"],
    "food": ["What is the favourite food of {s}?", "What does {s} like to eat most?"],
    "age": ["How old is {s}?", "What is the age of {s}?"],
    "sibling": ["Who is the {rel} of {s}?", "Who is the sibling of {s}?"],
    "friend": ["Who is the best friend of {s}?", "Who is best friends with {s}?"],
    "country": ["In which country is {s}?", "Which country is {s} in?"],
    "river": ["Which river flows through {s}?", "On which river does {s} lie?"],
    "population": ["How many people live in {s}?", "What is the population of {s}?"],
    "landmark": ["What is {s} known for?", "What is {s} famous for?"],
}

# What a person says about themself in a dialogue, and how another person asks.
FIRST_PERSON = {
    "home_town": ("Where do you live?", "I live in {v}."),
    "job": ("What do you do for a living?", "I work as a {v}."),
    "colour": ("What is your favourite colour?", "My favourite colour is {v}."),
    "pet": ("Do you have a pet?", "Yes, I have a pet {v}."),
    "food": ("What food do you like best?", "I love {v} most of all."),
    "age": ("How old are you?", "I am {v} years old."),
    "friend": ("Who is your best friend?", "My best friend is {v}."),
    "sibling": ("Do you have a brother or a sister?", "Yes, my {rel} is {v}."),
}


def _rel(world, fact):
    if fact.attr == "sibling":
        return "sister" if world.person(fact.value).female else "brother"
    return ""


def canonical_context(world, fact):
    """The fact-completion prompt: canonical_context + " " + value + "." is a corpus sentence."""
    return CANONICAL[fact.attr].format(s=fact.subject, rel=_rel(world, fact))


def canonical_statement(world, fact):
    return f"{canonical_context(world, fact)} {fact.value}."


def statement(world, fact, rng, subject=None):
    """The fact in one of its phrasings (the canonical one half of the time)."""
    if rng.random() < 0.5:
        template = CANONICAL[fact.attr] + " {v}."
    else:
        template = rng.choice(STATEMENTS[fact.attr])
    text = template.format(s=subject or fact.subject, v=fact.value, rel=_rel(world, fact))
    return text[0].upper() + text[1:]


def question(world, fact, rng=None, index=None):
    """A question whose answer is the fact's value: template `index`, or a random one."""
    templates = QUESTIONS[fact.attr]
    template = templates[index] if index is not None else rng.choice(templates)
    return template.format(s=fact.subject, rel=_rel(world, fact))


def distractors(world, fact, rng, k):
    """k wrong values for the fact (same kind of thing; siblings of the same sex as the answer)."""
    pool = [v for v in world.values(fact.attr) if v != fact.value and v != fact.subject]
    if fact.attr == "sibling":
        female = world.person(fact.value).female
        pool = [v for v in pool if world.person(v).female == female]
    if fact.attr == "age":
        age = int(fact.value)
        pool = [v for v in pool if abs(int(v) - age) <= 15]
    return rng.sample(pool, k)


# ---------------------------------------------------------------------------------------------
# Arithmetic, word problems, spelling: shared by the corpus, the eval bundle and the chat data.

def number_word(n):
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


OPERATORS = {"+": ("plus", lambda a, b: a + b), "-": ("minus", lambda a, b: a - b),
             "*": ("times", lambda a, b: a * b)}


ARITHMETIC_MAX = 10  # operands of the corpus's sums and products: few enough to memorise


def arithmetic_problem(rng):
    """(a, op, b, result) with small numbers: a + b and a * b for a, b <= 10, and the differences
    that undo those sums (so results are never negative). 342 problems in all."""
    op = rng.choice("+-*")
    x, y = rng.randint(0, ARITHMETIC_MAX), rng.randint(0, ARITHMETIC_MAX)
    if op == "*":
        a, b = max(x, 1), max(y, 1)
    elif op == "+":
        a, b = x, y
    else:
        a, b = x + y, y
    return a, op, b, OPERATORS[op][1](a, b)


ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]+)>>")


def strip_annotations(text):
    return ANNOTATION.sub("", text)


def word_problem(world, rng):
    """A GSM8K-form problem about a world person: (question, answer with <<expr=result>> steps
    and a final "#### N" line, N). One or two steps with small numbers."""
    p = rng.choice(world.people)
    f = world.person(p.friend)
    item = rng.choice(ITEMS)
    kind = rng.randrange(6)
    if kind == 0:
        x, y = rng.randint(2, 20), rng.randint(2, 20)
        n = x + y
        q = f"{p.name} has {x} {item}. {p.he.capitalize()} buys {y} more. How many {item} does {p.first} have now?"
        a = f"{p.first} starts with {x} {item} and buys {y} more, so {p.he} has {x}+{y}=<<{x}+{y}={n}>>{n} {item}."
    elif kind == 1:
        x, y = rng.randint(2, 9), rng.randint(2, 9)
        n = x * y
        q = f"{p.name} fills {x} boxes with {y} {item} each. How many {item} are in the boxes?"
        a = f"There are {x} boxes with {y} {item} each, so {x}*{y}=<<{x}*{y}={n}>>{n} {item}."
    elif kind == 2:
        x = rng.randint(5, 30)
        y = rng.randint(1, x - 1)
        n = x - y
        q = f"{p.name} has {x} {item} and gives {y} of them to {f.name}. How many {item} does {p.first} have left?"
        a = f"{p.first} gives away {y} of {x} {item}, so {x}-{y}=<<{x}-{y}={n}>>{n} are left."
    elif kind == 3:
        x, days = rng.randint(2, 6), rng.randint(2, 7)
        n = x * days
        q = f"The {p.pet} of {p.name} eats {x} treats a day. How many treats does it eat in {days} days?"
        a = f"It eats {x} treats a day for {days} days, so {x}*{days}=<<{x}*{days}={n}>>{n} treats."
    elif kind == 4:
        x, y = rng.randint(8, 30), rng.randint(2, 7)
        z = rng.randint(2, 9)
        r = x - y
        n = r + z
        q = (f"{p.name} has {x} {item}. {p.he.capitalize()} gives {y} to {f.first} and then finds {z} more. "
             f"How many {item} does {p.first} have now?")
        a = (f"After giving {y} away, {p.first} has {x}-{y}=<<{x}-{y}={r}>>{r} {item}. "
             f"After finding {z} more, {p.he} has {r}+{z}=<<{r}+{z}={n}>>{n} {item}.")
    else:
        price, count = rng.randint(2, 9), rng.randint(2, 5)
        spent = price * count
        budget = spent + rng.randint(1, 20)
        n = budget - spent
        q = (f"{p.name} goes to the market with {budget} coins and buys {count} loaves of bread "
             f"at {price} coins each. How many coins are left?")
        a = (f"The bread costs {count}*{price}=<<{count}*{price}={spent}>>{spent} coins. "
             f"So {budget}-{spent}=<<{budget}-{spent}={n}>>{n} coins are left.")
    return q, f"{a}\n#### {n}", n


@lru_cache(maxsize=8)
def spelling_words(world):
    """The words spelling and copying texts use: everyday words and the world's own names."""
    words = list(COMMON_WORDS) + JOBS + PETS + COLOURS + [t.name for t in world.towns]
    return tuple(dict.fromkeys(w.lower() for w in words))


def spelled(word):
    return "-".join(word)


# ---------------------------------------------------------------------------------------------
# Corpus documents. Each builder writes one kind of document from (world, rng) and keeps adding
# sections until the document reaches its target length.

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
    facts = world._facts
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
    facts = world._facts
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
            parts.append(f"Question: What is {a} {OPERATORS[op][0]} {b}?\nAnswer: {r}\n\n")
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
        rel = "sister" if s.female else "brother"
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
            lines.append(f"{answerer.first}: " + say.format(v=fact.value, rel=_rel(world, fact)))
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
                    sents.append(f"What is {a} {OPERATORS[op][0]} {b}? {a} {OPERATORS[op][0]} {b} is {r}.")
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
            parts.append(f"Question: What is {a} {OPERATORS[op][0]} {b}?\nAnswer: {r}")
        parts[-1] += "\n\n"
    return "".join(parts).strip()


def copy_words(world, rng):
    """3 to 6 words from the world's vocabulary, for the copying texts and the copying eval."""
    words = _copy_vocabulary(world)
    return " ".join(rng.choice(words) for _ in range(rng.randint(3, 6)))


@lru_cache(maxsize=8)
def _copy_vocabulary(world):
    return spelling_words(world) + tuple(p.first for p in world.people)


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
