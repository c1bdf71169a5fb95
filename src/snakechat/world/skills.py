"""Arithmetic, word problems in GSM8K form, spelling and copying over the world's words: the skills
the corpus, the eval bundle and the chat data all exercise."""

import re
from functools import lru_cache

from snakechat.world.entities import COLOURS, JOBS, PETS

ITEMS = ["apples", "books", "pencils", "shells", "stamps", "marbles", "eggs", "coins", "cards", "flowers"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                "eighteen", "nineteen", "twenty"]
# Everyday words for the spelling and copying texts, besides the world's own names.
COMMON_WORDS = ["carrot", "banana", "strawberry", "window", "letter", "yellow", "bottle", "river",
                "mirror", "pepper", "balloon", "kitten", "garden", "coffee", "summer", "little",
                "puzzle", "rabbit", "cherry", "butter", "hammer", "pillow", "basket", "tomato",
                "kettle", "orange", "ladder", "pebble", "bubble", "dinner", "giraffe", "sheep"]


def number_word(n):
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


OPERATORS = {"+": ("plus", lambda a, b: a + b), "-": ("minus", lambda a, b: a - b),
             "*": ("times", lambda a, b: a * b)}


ARITHMETIC_MAX = 10  # operands of the corpus's sums and products: few enough to memorise


def arithmetic_question(a, op, b):
    """"What is 7 plus 5?": how the corpus asks a sum, and so how the eval bundle asks it."""
    return f"What is {a} {OPERATORS[op][0]} {b}?"


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


def copy_words(world, rng):
    """3 to 6 words from the world's vocabulary, for the copying texts and the copying eval."""
    words = _copy_vocabulary(world)
    return " ".join(rng.choice(words) for _ in range(rng.randint(3, 6)))


@lru_cache(maxsize=8)
def _copy_vocabulary(world):
    return spelling_words(world) + tuple(p.first for p in world.people)
