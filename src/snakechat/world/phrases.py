"""How the world's facts are put into words: the canonical sentence a fact-completion eval asks
for, the other phrasings the corpus varies it with, questions, first-person answers, and wrong
answers of the same kind for multiple choice. Shared by the corpus, the eval bundle and the chat data.

"{s}" is the subject, "{v}" the value; "{rel}" is "sister" or "brother" for a sibling. The
canonical form is the one the fact-completion eval asks for ("{s} lives in" -> "Brindle"), and it
is the most frequent form in the corpus.
"""

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


def relation_word(world, fact):
    """What the value is to the subject, for "{rel}": "sister" or "brother" for a sibling, else ""."""
    if fact.attr == "sibling":
        return world.person(fact.value).sibling_word
    return ""


def canonical_context(world, fact):
    """The fact-completion prompt: canonical_context + " " + value + "." is a corpus sentence."""
    return CANONICAL[fact.attr].format(s=fact.subject, rel=relation_word(world, fact))


def canonical_statement(world, fact):
    return f"{canonical_context(world, fact)} {fact.value}."


def statement(world, fact, rng, subject=None):
    """The fact in one of its phrasings (the canonical one half of the time)."""
    if rng.random() < 0.5:
        template = CANONICAL[fact.attr] + " {v}."
    else:
        template = rng.choice(STATEMENTS[fact.attr])
    text = template.format(s=subject or fact.subject, v=fact.value, rel=relation_word(world, fact))
    return text[0].upper() + text[1:]


def question(world, fact, rng=None, index=None):
    """A question whose answer is the fact's value: template `index`, or a random one."""
    templates = QUESTIONS[fact.attr]
    template = templates[index] if index is not None else rng.choice(templates)
    return template.format(s=fact.subject, rel=relation_word(world, fact))


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
