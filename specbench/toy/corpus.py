"""A seeded generator of arithmetic word problems in GSM8K's format.

Every problem is a dict `{"question": str, "answer": str}` exactly like a line of
GSM8K's `test.jsonl`: the answer is a worked solution, one step per line, each
calculation annotated `<<a*b=c>>c` as GSM8K's calculator annotations are, and a
last line `#### N` with the final integer.

Five templates (buying in packs, sharing equally, rows of plants, ages, money),
each with 1 to 3 steps over small integers, so a model of about a million
parameters can learn them on a CPU in minutes and still get some wrong: the
toy pair needs a target that is right more often than its draft.

Training and held-out problems never overlap. Questions are split by a stable
hash (CRC-32 of the question text): one in `HELD_OUT_BUCKETS` hash buckets is held
out. `generate_problems(n, seed)` with a seed below `HELD_OUT_SEED` draws only
training-split questions; seeds from `HELD_OUT_SEED` on draw only held-out ones.
The toy pair trains on seed `--seed` (0 by default, must be below `HELD_OUT_SEED`)
and is evaluated on `held_out_problems(n)`, i.e. seed `HELD_OUT_SEED`, which is
also what the synthetic-arith task uses for its seed 0.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable

# The prompt of lm-eval's zero-shot gsm8k task (doc_to_text "Question: {{question}}\nAnswer:");
# the model continues it with " " + the worked solution.
SYNTHETIC_PROMPT = "Question: {question}\nAnswer:"

# Seeds from this one on draw held-out problems, seeds below it training problems.
HELD_OUT_SEED = 1_000_003
HELD_OUT_BUCKETS = 10  # one question in ten (by hash) is held out

# The number after "####", as lm-eval's gsm8k "strict-match" filter finds it (first match).
_FINAL_ANSWER = re.compile(r"####\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)")

_PEOPLE = [  # (name, subject pronoun, possessive pronoun)
    ("Ava", "she", "her"), ("Ben", "he", "his"), ("Carla", "she", "her"), ("Dan", "he", "his"),
    ("Emma", "she", "her"), ("Finn", "he", "his"), ("Grace", "she", "her"), ("Hugo", "he", "his"),
    ("Ivy", "she", "her"), ("Jack", "he", "his"), ("Kira", "she", "her"), ("Leo", "he", "his"),
    ("Maya", "she", "her"), ("Noah", "he", "his"), ("Olivia", "she", "her"), ("Omar", "he", "his"),
    ("Rosa", "she", "her"), ("Sam", "he", "his"), ("Tara", "she", "her"), ("Victor", "he", "his"),
]
_PACKED_ITEMS = ["pencils", "cookies", "stickers", "markers", "candies", "crayons", "buttons", "cards"]
_SHARED_ITEMS = ["apples", "marbles", "grapes", "coins", "shells", "beads", "nuts", "stamps"]
_PLANTS = [  # (place, plants, preposition for "... the place")
    ("garden", "tulips", "in"), ("farm", "corn plants", "on"), ("orchard", "trees", "in"),
    ("yard", "rose bushes", "in"), ("field", "sunflowers", "in"), ("park", "bushes", "in"),
]
_PRICED_ITEMS = [("notebooks", "notebook"), ("toys", "toy"), ("books", "book"), ("pens", "pen"),
                 ("shirts", "shirt"), ("tickets", "ticket"), ("plates", "plate"), ("hats", "hat")]


def _calc(a: int, op: str, b: int, result: int) -> str:
    """`a op b = <<a op b=result>>result`, GSM8K's annotated calculation."""
    return f"{a} {op} {b} = <<{a}{op}{b}={result}>>{result}"


def _two_people(rng: random.Random) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    first, second = rng.sample(_PEOPLE, 2)
    return first, second


def _buying(rng: random.Random, steps: int) -> tuple[str, list[str], int]:
    (name, he, _), (friend, _, _) = _two_people(rng)
    item = rng.choice(_PACKED_ITEMS)
    packs, per = rng.randint(2, 9), rng.randint(2, 12)
    total = packs * per
    question = [f"{name} buys {packs} packs of {item}. Each pack has {per} {item}."]
    lines = [f"{name} buys {_calc(packs, '*', per, total)} {item}."]
    if steps >= 2:
        had = rng.randint(1, 30)
        question.append(f"{he.capitalize()} already had {had} {item}.")
        lines.append(f"With the {had} {he} already had, {he} has {_calc(total, '+', had, total + had)} {item}.")
        total += had
    if steps >= 3:
        given = rng.randint(1, total - 1)
        question.append(f"{he.capitalize()} gives {given} {item} to {friend}.")
        lines.append(f"After giving {given} to {friend}, {he} has {_calc(total, '-', given, total - given)} {item}.")
        total -= given
    question.append(f"How many {item} does {name} have now?")
    return " ".join(question), lines, total


def _sharing(rng: random.Random, steps: int) -> tuple[str, list[str], int]:
    (name, he, _), _ = _two_people(rng)
    item = rng.choice(_SHARED_ITEMS)
    friends, each = rng.randint(2, 9), rng.randint(2, 12)
    total = friends * each
    question = [f"{name} has {total} {item}. {he.capitalize()} shares them equally among {friends} friends."]
    lines = [f"Each friend gets {_calc(total, '/', friends, each)} {item}."]
    if steps == 1:
        question.append(f"How many {item} does each friend get?")
        return " ".join(question), lines, each
    eaten = rng.randint(1, each - 1)
    left = each - eaten
    question.append(f"Each friend then uses {eaten} of them.")
    lines.append(f"Each friend has {_calc(each, '-', eaten, left)} {item} left.")
    if steps == 2:
        question.append(f"How many {item} does each friend have left?")
        return " ".join(question), lines, left
    question.append(f"How many {item} do the friends have left altogether?")
    lines.append(f"Together they have {_calc(left, '*', friends, left * friends)} {item}.")
    return " ".join(question), lines, left * friends


def _rows(rng: random.Random, steps: int) -> tuple[str, list[str], int]:
    (name, _, _), _ = _two_people(rng)
    place, plants, preposition = rng.choice(_PLANTS)
    rows, per = rng.randint(2, 9), rng.randint(2, 12)
    total = rows * per
    question = [f"{name}'s {place} has {rows} rows of {plants} with {per} {plants} in each row."]
    lines = [f"There are {_calc(rows, '*', per, total)} {plants}."]
    if steps >= 2:
        lost = rng.randint(1, total - 1)
        question.append(f"A storm destroys {lost} of the {plants}.")
        lines.append(f"After the storm there are {_calc(total, '-', lost, total - lost)} {plants}.")
        total -= lost
    if steps >= 3:
        planted = rng.randint(1, 30)
        question.append(f"Then {name} plants {planted} new {plants}.")
        lines.append(f"Now there are {_calc(total, '+', planted, total + planted)} {plants}.")
        total += planted
    question.append(f"How many {plants} are {preposition} {name}'s {place} now?")
    return " ".join(question), lines, total


def _ages(rng: random.Random, steps: int) -> tuple[str, list[str], int]:
    (name, _, _), (sibling, _, _) = _two_people(rng)
    age, gap = rng.randint(4, 40), rng.randint(1, 20)
    older = rng.random() < 0.5 or gap >= age
    sibling_age = age + gap if older else age - gap
    relation = "older" if older else "younger"
    question = [f"{name} is {age} years old. {sibling} is {gap} years {relation} than {name}."]
    op = "+" if older else "-"
    lines = [f"{sibling} is {_calc(age, op, gap, sibling_age)} years old."]
    answer = sibling_age
    if steps >= 2:
        question.append(f"Their uncle is twice as old as {sibling}.")
        lines.append(f"Their uncle is {_calc(sibling_age, '*', 2, sibling_age * 2)} years old.")
        answer = sibling_age * 2
    if steps >= 3:
        years = rng.randint(2, 15)
        question.append(f"How old will their uncle be in {years} years?")
        lines.append(f"In {years} years he will be {_calc(answer, '+', years, answer + years)} years old.")
        return " ".join(question), lines, answer + years
    question.append(f"How old is {'their uncle' if steps >= 2 else sibling}?")
    return " ".join(question), lines, answer


def _money(rng: random.Random, steps: int) -> tuple[str, list[str], int]:
    (name, he, _), _ = _two_people(rng)
    plural, singular = rng.choice(_PRICED_ITEMS)
    count, price = rng.randint(2, 9), rng.randint(2, 12)
    cost = count * price
    lines = [f"The {plural} cost {count} * {price} = $<<{count}*{price}={cost}>>{cost}."]
    if steps == 1:
        question = f"{name} buys {count} {plural}. Each {singular} costs ${price}. How much does {he} spend?"
        return question, lines, cost
    money = cost + rng.randint(0, 50)
    left = money - cost
    question = [f"{name} has ${money}. {he.capitalize()} buys {count} {plural} that cost ${price} each."]
    lines.append(f"{name} has {money} - {cost} = $<<{money}-{cost}={left}>>{left} left.")
    if steps >= 3:
        earned = rng.randint(1, 40)
        question.append(f"Then {he} earns ${earned} walking dogs.")
        total = left + earned
        lines.append(f"After walking dogs {he} has {left} + {earned} = $<<{left}+{earned}={total}>>{total}.")
        left += earned
    question.append(f"How much money does {name} have now?")
    return " ".join(question), lines, left


TEMPLATES: dict[str, Callable[[random.Random, int], tuple[str, list[str], int]]] = {
    "buying": _buying,
    "sharing": _sharing,
    "rows": _rows,
    "ages": _ages,
    "money": _money,
}


def is_held_out(question: str) -> bool:
    """Whether `question` belongs to the held-out split (a fixed function of its text)."""
    return zlib.crc32(question.encode("utf-8")) % HELD_OUT_BUCKETS == 0


def generate_problems(n: int, seed: int) -> list[dict[str, str]]:
    """`n` word problems with GSM8K-style worked solutions; the same (n, seed) gives the same list.

    Each problem picks a template and a step count (1-3) uniformly, then its numbers;
    answers are non-negative integers. Candidates from the other split (see `is_held_out`)
    are skipped, so seeds below `HELD_OUT_SEED` never yield a held-out question and seeds
    from it on yield nothing else. The first m problems of a seed do not depend on n.
    """
    if n < 0:
        raise ValueError(f"number of problems must be >= 0, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    held_out = seed >= HELD_OUT_SEED
    rng = random.Random(seed)
    names = list(TEMPLATES)
    problems = []
    while len(problems) < n:
        template = TEMPLATES[rng.choice(names)]
        question, lines, final = template(rng, rng.randint(1, 3))
        if is_held_out(question) == held_out:
            problems.append({"question": question, "answer": "\n".join(lines) + f"\n#### {final}"})
    return problems


def held_out_problems(n: int) -> list[dict[str, str]]:
    """Evaluation problems: `generate_problems(n, HELD_OUT_SEED)`, none of which any training seed yields."""
    return generate_problems(n, HELD_OUT_SEED)


def format_prompt(question: str) -> str:
    """The zero-shot prompt for one question (lm-eval gsm8k's format)."""
    return SYNTHETIC_PROMPT.format(question=question)


def format_example(problem: dict[str, str]) -> str:
    """Prompt plus worked solution, as the models are trained on it (the prompt's ':' then ' ' + answer)."""
    return format_prompt(problem["question"]) + " " + problem["answer"]


def extract_answer(text: str) -> str | None:
    """The number after the first `####` in `text`, thousands separators removed; None if there is none.

    The first match is the one lm-eval's strict-match filter takes, and a model that runs on past
    its answer into a new "Question:" is judged by what it answered first.
    """
    match = _FINAL_ANSWER.search(text)
    return match.group(1).replace(",", "") if match else None
