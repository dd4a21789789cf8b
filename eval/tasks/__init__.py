"""Evaluation tasks, by name.

Why a registry: ``gsrm-eval run --tasks a,b`` and the report refer to tasks by name, and a new
corpus is one module plus one line here.

=====================  ============  =========================================================
name                   kind          data
=====================  ============  =========================================================
gsm8k-socratic         segmentation  gsm8k/test_socratic.jsonl, items >= 1000
prm800k-steps          segmentation  prm800k_phase1/phase1_test*.parquet
champ-steps            segmentation  PyPI champ-dataset
bbm-steps              segmentation  bigbench_mistake/*.jsonl
branching-steps        segmentation  prm800k_phase1/phase1_test*.parquet, built as branching traces
schoenfeld-r1          segmentation  --schoenfeld DIR (optional; dev only, never trained on)
annotated-jsonl        segmentation  --annotated FILE (default: eval/data/annotated_sample.jsonl)
prmbench-structure     reward        prmbench/prm800k_test_*.jsonl
reward-sanity          reward        gsm8k/test.jsonl, items >= 1000
=====================  ============  =========================================================

Example::

    >>> sorted(TASKS)[:3]
    ['annotated-jsonl', 'bbm-steps', 'branching-steps']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eval.tasks.annotated import AnnotatedJsonl
from eval.tasks.base import DataMissing, ResultRow, Task, TaskContext, TaskOutput
from eval.tasks.branching import BranchingSteps
from eval.tasks.gsm8k import GSM8KSocratic
from eval.tasks.prmbench import PRMBenchStructure
from eval.tasks.sanity import RewardSanity
from eval.tasks.schoenfeld import SchoenfeldR1
from eval.tasks.steps import BBMSteps, CHAMPSteps, PRM800KSteps

TASKS: dict[str, Callable[[], Task[Any]]] = {
    t.name: t
    for t in (GSM8KSocratic, PRM800KSteps, CHAMPSteps, BBMSteps, BranchingSteps, SchoenfeldR1,
              AnnotatedJsonl, PRMBenchStructure, RewardSanity)
}


def get_task(name: str) -> Task[Any]:
    """A task instance by registry name."""
    try:
        return TASKS[name]()
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}") from None


__all__ = ["TASKS", "DataMissing", "ResultRow", "Task", "TaskContext", "TaskOutput", "get_task"]
