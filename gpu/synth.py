"""Made-up GSM8K-style problems and long branching traces for the GPU check (stdlib only).

Why generated: the GPU machine receives only the repository and the bundle (gpu/README.md);
the human-written data sets in ``../shared/data`` never travel there and must not be copied
into the repository (DESIGN.md section 5). The check needs (a) a GSM8K-format training file for
``rlkd-train grpo`` and ``benchmarks/decode.py`` and (b) reasoning traces of two lengths for the
decomposition throughput. These are arithmetic stories with exact answers, deterministic for
a seed; they measure speed and exercise the paths, not model quality.

- ``gsm8k/train.jsonl``: ``{"question", "answer"}``, the answer in GSM8K's form: one step a
  line with ``<<a*b=c>>`` calculator notes and a last line ``#### N``.
- ``traces/gsm8k.jsonl``: ``{"problem", "reasoning"}``: the same solutions as prose, one line.
- ``traces/long.jsonl``: ``{"problem", "reasoning"}``: about ``--long-chars`` characters (default
  4,700, the held-out long traces of DESIGN.md section 7): several sub-problems solved in turn,
  with plans, checks, a wrong step caught and redone, and no line breaks.

Example::

    $ python gpu/synth.py --out /tmp/gsrm-data --gsm8k 2000 --long 16
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

NAMES = ["Maya", "Tom", "Priya", "Lucas", "Aisha", "Ben", "Chen", "Dara", "Elena", "Farid",
         "Grace", "Hugo", "Ines", "Jonas", "Keiko", "Liam", "Mina", "Noah", "Olga", "Pablo"]
PRONOUN = {n: ("she" if n in {"Maya", "Priya", "Aisha", "Dara", "Elena", "Grace", "Ines",
                              "Keiko", "Mina", "Olga"} else "he") for n in NAMES}
ITEMS = ["sticker", "marble", "stamp", "card", "shell", "coin", "pencil", "button", "bead",
         "apple", "cookie", "book"]
FRACTIONS = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}
PLAN_CUES = ["First, I need", "Let me start by finding", "To begin, I will work out",
             "The first thing to find is"]
NEXT_CUES = ["Next, I need", "Now let's compute", "Then I should find", "After that, I work out",
             "Moving on, I need"]
CHECK_CUES = ["Wait, let me verify that.", "Let me double-check this step.",
              "Hmm, let me check that again."]
WRONG_CUES = ["Wait, that is not right.", "Hmm, that does not look right.",
              "No, I made a mistake there."]


@dataclass
class Step:
    """One solved step: what it finds, the calculator line, the prose, and the result."""

    goal: str
    line: str
    prose: str
    value: int


@dataclass
class Problem:
    """A word problem, its steps and its integer answer."""

    question: str
    steps: list[Step] = field(default_factory=list)
    answer: int = 0

    def gsm8k_answer(self) -> str:
        """The solution as GSM8K writes it: calculator notes and a ``#### N`` line."""
        return "\n".join([s.line for s in self.steps] + [f"#### {self.answer}"])

    def prose(self) -> str:
        """The solution as one line of reasoning, ending with the answer sentence."""
        return " ".join([s.prose for s in self.steps] + [f"The answer is {self.answer}."])


def _calc(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]


def _note(a: int, op: str, b: int) -> str:
    return f"{a}{op}{b} = <<{a}{op}{b}={_calc(a, op, b)}>>{_calc(a, op, b)}"


def make_problem(rng: random.Random, n_steps: int | None = None) -> Problem:
    """A story of ``n_steps`` operations on one count (3-7 if None), exact in integers.

    >>> p = make_problem(random.Random(0), 4)
    >>> p.gsm8k_answer().splitlines()[-1] == f"#### {p.answer}" and len(p.steps) >= 4
    True
    """
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    she = PRONOUN[name]
    n_steps = n_steps or rng.randint(3, 7)
    count = rng.randint(8, 60)
    sentences = [f"{name} has {count} {item}s."]
    prob = Problem(question="")
    for i in range(n_steps):
        last = i == n_steps - 1
        kind = rng.choice(["packs", "give", "lose", "times"] + (["sell", "boxes"] if last else []))
        if kind == "give":
            divisors = [d for d in FRACTIONS if count % d == 0 and count // d > 0]
            kind = "give" if divisors else "packs"
        if kind == "boxes":
            divisors = [d for d in range(2, 10) if count % d == 0]
            kind = "boxes" if divisors else "sell"
        if kind == "packs":
            k, m = rng.randint(2, 6), rng.randint(3, 15)
            got = k * m
            sentences.append(f"Then {she} buys {k} packs with {m} {item}s in each pack.")
            prob.steps.append(Step(f"how many {item}s come in the {k} packs",
                                   f"The packs hold {_note(k, '*', m)} {item}s.",
                                   f"The {k} packs hold {k} * {m} = {got} {item}s.", got))
            new = count + got
            prob.steps.append(Step(f"how many {item}s {name} has after buying the packs",
                                   f"Now {she} has {_note(count, '+', got)} {item}s.",
                                   f"So {she} now has {count} + {got} = {new} {item}s.", new))
        elif kind == "give":
            d = rng.choice(divisors)
            given = count // d
            friend = rng.choice([n for n in NAMES if n != name])
            sentences.append(f"{she.capitalize()} gives {FRACTIONS[d]} of them to {friend}.")
            prob.steps.append(Step(f"how many {item}s go to {friend}",
                                   f"{friend} gets {_note(count, '/', d)} {item}s.",
                                   f"{FRACTIONS[d].capitalize()} of {count} is {count} / {d} = "
                                   f"{given}, which {friend} gets.", given))
            new = count - given
            prob.steps.append(Step(f"how many {item}s {name} keeps",
                                   f"{name} keeps {_note(count, '-', given)} {item}s.",
                                   f"{name} keeps {count} - {given} = {new} {item}s.", new))
        elif kind == "lose":
            lost = rng.randint(1, max(1, count // 3))
            new = count - lost
            sentences.append(f"{she.capitalize()} loses {lost} of them on the way home.")
            prob.steps.append(Step(f"how many {item}s are left after losing {lost}",
                                   f"After the loss {she} has {_note(count, '-', lost)} {item}s.",
                                   f"Losing {lost} leaves {count} - {lost} = {new} {item}s.", new))
        elif kind == "times":
            f = rng.choice([2, 3])
            new = count * f
            word = {2: "doubles", 3: "triples"}[f]
            sentences.append(f"Over the summer {she} {word} the collection.")
            prob.steps.append(Step(f"the size of the collection after it {word}",
                                   f"The collection grows to {_note(count, '*', f)} {item}s.",
                                   f"It {word}, so it becomes {count} * {f} = {new} {item}s.", new))
        elif kind == "sell":
            price = rng.randint(2, 9)
            new = count * price
            sentences.append(f"{she.capitalize()} sells all of them for ${price} each. "
                             "How much money does "
                             f"{she} make?")
            prob.steps.append(Step("the money from selling all of them",
                                   f"{she.capitalize()} makes {_note(count, '*', price)} dollars.",
                                   f"Selling {count} at ${price} each makes {count} * {price} = "
                                   f"${new}.", new))
        else:  # boxes
            d = rng.choice(divisors)
            new = count // d
            sentences.append(f"{she.capitalize()} puts them equally into {d} boxes. "
                             f"How many {item}s are in each box?")
            prob.steps.append(Step(f"how many {item}s go in each of the {d} boxes",
                                   f"Each box gets {_note(count, '/', d)} {item}s.",
                                   f"Split into {d} boxes, each box holds {count} / {d} = {new}.",
                                   new))
        count = new
    if not sentences[-1].endswith("?"):
        sentences.append(f"How many {item}s does {name} have now?")
    prob.question = " ".join(sentences)
    prob.answer = count
    return prob


def long_trace(rng: random.Random, chars: int) -> tuple[str, str]:
    """(problem, reasoning) of about ``chars`` characters: several problems, solved with cues.

    Each step opens with a plan cue (or none), some are checked, and about one in six is first
    done wrong, caught ("Wait, that is not right.") and redone; no line breaks.

    >>> problem, reasoning = long_trace(random.Random(1), 2000)
    >>> len(reasoning) >= 2000 and "\\n" not in reasoning and problem.startswith("(1) ")
    True
    """
    questions: list[str] = []
    parts: list[str] = []
    size = 0
    while size < chars:
        prob = make_problem(rng)
        questions.append(f"({len(questions) + 1}) {prob.question}")
        for j, step in enumerate(prob.steps):
            cue = rng.choice(PLAN_CUES if j == 0 else NEXT_CUES)
            text = f"{cue} {step.goal}." if rng.random() < 0.7 else ""
            if rng.random() < 1 / 6:
                wrong = step.value + rng.choice([-10, -3, -1, 1, 2, 10])
                text += (f" I get {wrong}. {rng.choice(WRONG_CUES)} Redoing it: {step.prose}")
            else:
                text += f" {step.prose}"
            if rng.random() < 0.2:
                text += f" {rng.choice(CHECK_CUES)} Yes, the result is {step.value}."
            parts.append(text.strip())
            size += len(text) + 1
        parts.append(f"So the answer to part {len(questions)} is {prob.answer}.")
    return " ".join(questions), " ".join(parts)


def write_jsonl(path: Path, rows: Sequence[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def generate(out: Path, gsm8k: int, long: int, long_chars: int = 4700, seed: int = 0
             ) -> dict[str, object]:
    """Write the three files under ``out``; returns what was written (paths and counts)."""
    rng = random.Random(seed)
    problems = [make_problem(rng) for _ in range(gsm8k)]
    train = out / "gsm8k" / "train.jsonl"
    write_jsonl(train, [{"question": p.question, "answer": p.gsm8k_answer()} for p in problems])
    short = out / "traces" / "gsm8k.jsonl"
    write_jsonl(short, [{"problem": p.question, "reasoning": p.prose()} for p in problems])
    longs = [long_trace(rng, long_chars) for _ in range(long)]
    long_path = out / "traces" / "long.jsonl"
    write_jsonl(long_path, [{"problem": q, "reasoning": r} for q, r in longs])
    return {"gsm8k_train": str(train), "gsm8k_traces": str(short), "long_traces": str(long_path),
            "n_gsm8k": gsm8k, "n_long": long, "seed": seed,
            "mean_long_chars": round(sum(len(r) for _, r in longs) / max(1, long)),
            "mean_gsm8k_chars": round(sum(len(p.prose()) for p in problems) / max(1, gsm8k))}


def main(argv: Sequence[str] | None = None) -> int:
    """Write the files and print one JSON line saying what was written."""
    p = argparse.ArgumentParser(prog="python gpu/synth.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write gsm8k/ and traces/ into")
    p.add_argument("--gsm8k", type=int, default=2000, help="GSM8K-style problems")
    p.add_argument("--long", type=int, default=16, help="long traces")
    p.add_argument("--long-chars", type=int, default=4700, help="characters per long trace (~)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.gsm8k < 1 or args.long < 0 or args.long_chars < 1:
        print("error: --gsm8k >= 1, --long >= 0, --long-chars >= 1", file=sys.stderr)
        return 2
    print(json.dumps(generate(Path(args.out), args.gsm8k, args.long, args.long_chars,
                              args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
