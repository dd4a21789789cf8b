"""The structural alignment reward of RLKD (DESIGN.md section 1), exact and tested.

Rule (mode ``paper``, from the authors' released code): compare the student's step i with the
teacher's step i for i < min(n_teacher, n_student);
  * meta-reasoning: r_i = 1 if the judge says both are devoted to the same sub-problem, else 0,
    and once some r_i = 0 every later step is 0 (gating: a student that took a different turn
    gets nothing for what follows, however similar);
  * sub-problem: if the judge says they differ, r_i *= 0.5;
  * answer: if the judge says they are not equal, r_i *= 0.5.
The reward is the unnormalised sum of r_i; an empty decomposition on either side is a *scored* 0.

Also: mode ``normalized`` divides that sum by the teacher's step count (in [0, 1], comparable
across problems); ``coverage`` = min(1, n_student / n_teacher) is always reported, and with
``use_coverage`` it is added to the ``paper`` reward (the authors computed it and left the
addition commented out) or averaged with the ``normalized`` reward so that stays in [0, 1].

Decisions the released code left implicit, made explicit here, none of them sent to the judge:
  * a part missing on one side only (empty text) is a mismatch;
  * a part missing on both sides is a match: nothing differs (counting it a mismatch made a
    student identical to its teacher score below the maximum whenever the decomposition left
    a part empty: reward-sanity ``self_max`` 0.84);
  * identical parts (equal up to whitespace) match, whatever the judge would say: a judge
    decides whether two texts say the same thing, and a text says what it says; so a student
    identical to its teacher always gets the maximum, in both modes, with every judge.
Sub-problem and answer are judged only for steps whose meta-reasoning matched (for the others
r_i is already 0), which is what lets ``score_structures`` batch the meta verdicts first and
skip the rest.

Example::

    >>> from gsrm.align import step_rewards
    >>> step_rewards(meta=[True, True, False, True], subproblem=[True, False], answer=[False, True])
    [0.5, 0.5, 0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gsrm.structure import Kind, ScoreMode, ScoreResult, StepVerdicts, Structure, Verdict

if TYPE_CHECKING:
    from gsrm.judges import Judge

SCORE_MODES: tuple[str, ...] = ("paper", "normalized")


def matched_prefix(meta: Sequence[bool]) -> int:
    """Number of leading steps whose meta-reasoning matched (the gate closes at the first miss)."""
    n = 0
    for ok in meta:
        if not ok:
            break
        n += 1
    return n


def step_rewards(
    meta: Sequence[bool], subproblem: Sequence[bool], answer: Sequence[bool]
) -> list[float]:
    """Per-step rewards r_i from verdicts; ``subproblem``/``answer`` cover the matched prefix.

    ``meta`` has one verdict per compared position; ``subproblem`` and ``answer`` need only the
    first ``matched_prefix(meta)`` entries (later ones are ignored).
    """
    k = matched_prefix(meta)
    if len(subproblem) < k or len(answer) < k:
        raise ValueError(
            f"need sub-problem and answer verdicts for the {k} matched steps, "
            f"got {len(subproblem)} and {len(answer)}"
        )
    out: list[float] = []
    for i in range(len(meta)):
        if i >= k:
            out.append(0.0)
            continue
        r = 1.0
        if not subproblem[i]:
            r *= 0.5
        if not answer[i]:
            r *= 0.5
        out.append(r)
    return out


def coverage(n_teacher: int, n_student: int) -> float:
    """min(1, n_student / n_teacher); 0 when the teacher has no steps."""
    if n_teacher <= 0:
        return 0.0
    return min(1.0, n_student / n_teacher)


def combine(
    rewards: Sequence[float],
    n_teacher: int,
    n_student: int,
    mode: ScoreMode = "paper",
    use_coverage: bool = False,
) -> tuple[float, float, float]:
    """(reward for ``mode``, normalized reward, coverage) from per-step rewards."""
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown score mode {mode!r}; choose one of {SCORE_MODES}")
    if n_teacher == 0 or n_student == 0:
        return 0.0, 0.0, coverage(n_teacher, n_student)
    total = float(sum(rewards))
    norm = total / n_teacher
    cov = coverage(n_teacher, n_student)
    if mode == "paper":
        reward = total + cov if use_coverage else total
    else:
        reward = (norm + cov) / 2 if use_coverage else norm
    return reward, norm, cov


def settled_verdict(a: str, b: str) -> Verdict | None:
    """The verdict on a part pair that needs no judge, or None when the judge must decide.

    >>> settled_verdict("", " ").match, settled_verdict("x", "").match
    (True, False)
    >>> settled_verdict("add  2 and 3", "add 2 and 3").match, settled_verdict("a", "b") is None
    (True, True)
    """
    a, b = " ".join(a.split()), " ".join(b.split())
    if a == b:  # identical, or missing on both sides: nothing differs
        return Verdict(match=True, score=1.0)
    if not a or not b:  # missing on one side only
        return Verdict(match=False, score=0.0)
    return None


def _judge_positions(
    judge: Judge,
    kind: Kind,
    jobs: list[tuple[int, int]],
    pairs: Sequence[tuple[Structure, Structure]],
) -> dict[tuple[int, int], Verdict]:
    """Judge part ``kind`` of (item, step) positions in one batch; settled pairs (empty or
    identical parts, ``settled_verdict``) never reach it."""
    out: dict[tuple[int, int], Verdict] = {}
    to_ask: list[tuple[int, int]] = []
    texts: list[tuple[str, str]] = []
    for item, i in jobs:
        teacher, student = pairs[item]
        a = teacher.steps[i].part(kind).strip()
        b = student.steps[i].part(kind).strip()
        settled = settled_verdict(a, b)
        if settled is not None:
            out[(item, i)] = settled
        else:
            to_ask.append((item, i))
            texts.append((a, b))
    if texts:
        verdicts = judge.judge_many(texts, kind)
        if len(verdicts) != len(texts):
            raise RuntimeError(
                f"judge {judge.name!r} returned {len(verdicts)} verdicts for {len(texts)} pairs"
            )
        out.update(zip(to_ask, verdicts))
    return out


def score_structures(
    pairs: Sequence[tuple[Structure, Structure]],
    judge: Judge,
    mode: ScoreMode = "paper",
    use_coverage: bool = False,
) -> list[ScoreResult]:
    """Score (teacher, student) structure pairs with one batched judge call per part kind.

    Judge failures propagate as exceptions: a failure is never turned into a reward.
    """
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown score mode {mode!r}; choose one of {SCORE_MODES}")
    n_cmp = [min(t.n_steps, s.n_steps) for t, s in pairs]
    meta_jobs = [(item, i) for item, n in enumerate(n_cmp) for i in range(n)]
    meta_v = _judge_positions(judge, "meta", meta_jobs, pairs)
    prefixes = [
        matched_prefix([meta_v[(item, i)].match for i in range(n)]) for item, n in enumerate(n_cmp)
    ]
    gated_jobs = [(item, i) for item, k in enumerate(prefixes) for i in range(k)]
    sub_v = _judge_positions(judge, "subproblem", gated_jobs, pairs)
    ans_v = _judge_positions(judge, "answer", gated_jobs, pairs)

    results: list[ScoreResult] = []
    for item, (teacher, student) in enumerate(pairs):
        n, k = n_cmp[item], prefixes[item]
        metas = [meta_v[(item, i)].match for i in range(n)]
        subs = [sub_v[(item, i)].match for i in range(k)]
        anss = [ans_v[(item, i)].match for i in range(k)]
        rewards = step_rewards(metas, subs, anss)
        reward, norm, cov = combine(rewards, teacher.n_steps, student.n_steps, mode, use_coverage)
        verdicts = [
            StepVerdicts(
                index=i,
                meta=meta_v[(item, i)],
                subproblem=sub_v.get((item, i)),
                answer=ans_v.get((item, i)),
            )
            for i in range(n)
        ]
        results.append(
            ScoreResult(
                reward=reward,
                normalized_reward=norm,
                coverage=cov,
                mode=mode,
                use_coverage=use_coverage,
                judge=judge.name,
                step_rewards=rewards,
                verdicts=verdicts,
                teacher=teacher,
                student=student,
            )
        )
    return results
