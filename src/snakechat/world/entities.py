"""The built-in world: a small seeded universe of people and towns.

One seed fixes everything: who lives where, what they do, who their friends are. The same world
feeds the pretraining corpus (`snakechat.world.corpus`), the CORE-format eval bundle
(`snakechat.world.bundle`) and the chat data (`snakechat.world.chat`), so a tiny model that has
read the corpus is tested on exactly the facts it read. How facts are put into words is
`snakechat.world.phrases`; the arithmetic, word problems and spelling all three share are
`snakechat.world.skills`.

The world is small on purpose (20 people, 8 towns) and every fact is stated many times in varied
phrasings, so a depth-4 model trained for a few CPU minutes can memorise a good part of it.

Determinism: each random choice comes from a `random.Random` seeded with a string naming the seed
and the item (document i, task t, ...); Python seeds from strings with SHA-512, not with the
randomised `hash()`, and nothing here iterates over a set. Same seed => same text everywhere.
"""

import random
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

    @property
    def sibling_word(self):
        """What this person is to their sibling."""
        return "sister" if self.female else "brother"


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
