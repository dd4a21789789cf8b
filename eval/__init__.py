"""Evaluation suite: is the GSRM's decomposition, and the reward built on it, any good?

Why a package of its own: the same numbers answer the project's questions (does fine-tuning
help? does a judge change rankings?) and users' (is the reward sane on my data?), so they
come from one command, ``gsrm-eval`` (``eval.cli``), over named tasks (``eval.tasks``),
systems (``eval.systems``) and metrics (``eval.metrics``). Decompositions are projected back
onto the input trace (``gsrm.projection``) so generated text can be compared with human step
boundaries, and are cached on disk (``eval.cache``) so reruns decode nothing.
"""
