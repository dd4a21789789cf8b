"""Turn an ``EvalReport`` into files: metrics JSON, a Markdown report, PNG plots; and diff two.

Why here and not in the runner: rendering is pure formatting of finished numbers, so the
tables and the comparison are testable on hand-made reports, and matplotlib (imported only
inside ``make_plots``, with the non-interactive Agg backend) is never needed to compute
anything.

Files written by ``write_outputs(out_dir, ...)``:

- ``metrics.json``: the ``EvalReport`` (deterministic for a given config and seed);
- ``timing.json``: the ``RunStats`` (seconds, cache hits: these vary between runs);
- ``items.jsonl``: per-item details of every (task, system[, judge]);
- ``report.md``: one table per task, notes, skipped systems/tasks, timing, plot links;
- ``plots/*.png``: metric bars per system, reward distributions of aligned vs perturbed
  students (reward tasks), role confusion matrices (tasks with role annotations).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.metrics import ROLES, higher_is_better
from eval.runner import EvalReport, RunStats, TaskReport, UsageError
from eval.systems import given_adapter
from eval.tasks.base import ResultRow
from gsrm.io import write_text_atomic
from gsrm.weights import DEFAULT_ADAPTER

#: preferred column order; other metrics follow alphabetically (per-type ones in own tables)
COLUMNS: tuple[str, ...] = (
    "n", "boundary_f1_char", "boundary_p_char", "boundary_r_char", "boundary_f1_sent",
    "segment_f1", "pk", "windowdiff", "steps_hyp", "steps_ref", "subproblem_f1", "answer_acc",
    "role_accuracy", "role_macro_f1", "role_kappa", "rank_acc", "auc", "reward_aligned",
    "reward_perturbed", "first_drop_in_error", "first_drop_exact", "no_drop", "self_max",
    "lower_shuffled", "lower_truncated", "lower_replaced", "prefix_monotone",
    "prefix_spearman", "no_steps", "hit_max_tokens",
)
HIDDEN: frozenset[str] = frozenset({"boundary_p_sent", "boundary_r_sent", "step_count_mae"})
#: metrics drawn as bars, per task kind (those present in the rows are used)
BAR_METRICS: dict[str, tuple[str, ...]] = {
    "segmentation": ("boundary_f1_char", "boundary_f1_sent", "segment_f1", "subproblem_f1",
                     "answer_acc", "role_accuracy", "role_macro_f1"),
    "reward": ("rank_acc", "auc", "first_drop_in_error", "self_max", "prefix_monotone"),
}


def row_label(row: ResultRow) -> str:
    """``system`` or ``system / judge``."""
    return f"{row.system} / {row.judge}" if row.judge else row.system


def fmt(value: Any) -> str:
    """Numbers to 3 decimals (integers as is), None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def columns_of(rows: Sequence[ResultRow]) -> tuple[list[str], list[str]]:
    """(main columns, per-group columns such as ``rank_acc.circular``) present in the rows."""
    keys = {k for r in rows for k in r.metrics}
    main = [c for c in COLUMNS if c in keys]
    main += sorted(k for k in keys if k not in COLUMNS and "." not in k and k not in HIDDEN)
    grouped = sorted(k for k in keys if "." in k)
    return main, grouped


def markdown_table(rows: Sequence[ResultRow], columns: Sequence[str],
                   headers: Sequence[str] | None = None) -> str:
    """A Markdown table: one line per row, a first column naming the system (and judge)."""
    heads = list(headers or columns)
    lines = ["| system | " + " | ".join(heads) + " |",
             "|---|" + "---:|" * len(heads)]
    for r in rows:
        lines.append(f"| {row_label(r)} | " + " | ".join(fmt(r.metrics.get(c)) for c in columns)
                     + " |")
    return "\n".join(lines)


def task_section(tr: TaskReport, plots: Sequence[str]) -> str:
    """The Markdown section of one task."""
    out = [f"## {tr.name}", "", f"{tr.description}.", "",
           f"Items: {tr.n_items} (of {tr.available} available)"
           + (f"; generation budget {tr.max_new_tokens} new tokens for model systems."
              if tr.max_new_tokens else ".")]
    if tr.rows:
        main, grouped = columns_of(tr.rows)
        out += ["", markdown_table(tr.rows, main)]
        if grouped:
            heads = [g.split(".", 1)[1] for g in grouped]
            prefix = grouped[0].split(".", 1)[0]
            out += ["", f"Per group ({prefix}):", "", markdown_table(tr.rows, grouped, heads)]
    notes = [f"- {row_label(r)}: {n}" for r in tr.rows for n in r.notes]
    if notes:
        out += ["", "Notes:", "", *notes]
    if tr.skipped_systems:
        out += ["", "Skipped systems:", ""]
        out += [f"- {name}: {why}" for name, why in sorted(tr.skipped_systems.items())]
    if tr.bad_lines:
        out += ["", f"Bad input lines skipped: {len(tr.bad_lines)}", ""]
        out += [f"- {b}" for b in tr.bad_lines[:10]]
        if len(tr.bad_lines) > 10:
            out.append(f"- ... and {len(tr.bad_lines) - 10} more (see metrics.json)")
    for p in plots:
        out += ["", f"![{Path(p).stem}]({p})"]
    return "\n".join(out)


GLOSSARY = """\
Metrics: `boundary_*_char` — boundary precision/recall/F1, a boundary counted within the
character tolerance; `boundary_f1_sent` — the same on sentence units with the sentence
tolerance; `segment_f1` — exact-segment F1 (sentences); `pk`, `windowdiff` — lower is better;
`steps_hyp`/`steps_ref` — mean steps per trace; `subproblem_f1` — token F1 of human
sub-questions and the covering step's sub-problem; `answer_acc` — the covering step's answer
equals the human step's result; `answer_agree` / `answer_agree_short` — the default judge
matches it with the human step's sentence without its arithmetic / with its result stated
briefly; `role_*` — meta/solve/other agreement per sentence;
`rank_acc` — aligned student scored above the perturbed one (ties 1/2); `auc` — ROC AUC of
aligned vs perturbed normalized rewards; `first_drop_*` — the first step losing reward lies in
the perturbed steps; `self_max`, `lower_*`, `prefix_*` — reward invariants; `no_steps`,
`hit_max_tokens` — shares of empty decompositions and of generations cut at the budget.
See `eval/metrics.py`, `gsrm/projection.py` and `eval/tasks/` for the exact definitions."""


def render_markdown(report: EvalReport, stats: RunStats | None,
                    plots: dict[str, list[str]] | None = None) -> str:
    """The whole report as Markdown."""
    cfg = report.config
    out = ["# gsrm-eval report", "",
           f"- tasks: {', '.join(cfg.tasks)}",
           f"- systems: {', '.join(cfg.systems)}",
           f"- judges: {', '.join(cfg.judges)}",
           (f"- limit: {cfg.limit if cfg.limit is not None else 'none'}; seed: {cfg.seed}; "
            f"tolerance: {cfg.char_tolerance} characters / {cfg.sent_tolerance} sentences"),
           f"- data: {cfg.data or '(default)'}"]
    so = cfg.system_options
    # the adapter gsrm-ft ran with is named even when defaulted: the default changes over time
    adapter = given_adapter(so) or f"{DEFAULT_ADAPTER} (default)"
    out.append(f"- model systems: dtype {so.dtype}, batch {so.batch_size}, "
               f"max_new_tokens {cfg.max_new_tokens or 'per task'}, model {so.model or 'embedded'}"
               f", adapter {adapter}")
    if stats is not None:
        # model systems decode up front (stats.prefetch) and their jobs then read the cache;
        # rule baselines are neither cached nor counted
        gen = sum(j.decomposed for j in stats.prefetch)
        hits = sum(j.cache_hits for j in stats.prefetch)
        out.append(f"- wall time: {stats.total_seconds:.1f} s; model decompositions: {gen} "
                   f"generated, {hits} from the cache ({stats.cache_file})")
    out += ["", GLOSSARY]
    if report.errors:
        out += ["", "## Errors", "", *[f"- {e}" for e in report.errors]]
    if report.skipped_tasks or report.skipped_systems or report.skipped_judges:
        out += ["", "## Skipped", ""]
        out += [f"- task {k}: {v}" for k, v in sorted(report.skipped_tasks.items())]
        out += [f"- system {k}: {v}" for k, v in sorted(report.skipped_systems.items())]
        out += [f"- judge {k}: {v}" for k, v in sorted(report.skipped_judges.items())]
    for name, tr in report.tasks.items():
        out += ["", task_section(tr, (plots or {}).get(name, []))]
    if stats is not None and stats.jobs:
        out += ["", "## Timing", "", "| task | system | seconds | decomposed | cache hits |",
                "|---|---|---:|---:|---:|"]
        out += [f"| decode: {j.task} | {j.system} | {j.seconds:.1f} | {j.decomposed} | "
                f"{j.cache_hits} |" for j in stats.prefetch]
        out += [f"| {j.task} | {j.system} | {j.seconds:.1f} | {j.decomposed} | {j.cache_hits} |"
                for j in stats.jobs]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- plots
def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def make_plots(report: EvalReport, out_dir: Path) -> dict[str, list[str]]:
    """Write the PNG plots; returns task -> plot paths relative to ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, list[str]] = {}
    for name, tr in report.tasks.items():
        rows = [r for r in tr.rows if any(r.metrics.get(m) is not None
                                          for m in BAR_METRICS.get(tr.kind, ()))]
        files: list[str] = []
        metrics = [m for m in BAR_METRICS.get(tr.kind, ())
                   if any(r.metrics.get(m) is not None for r in rows)]
        if rows and metrics:
            fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics) + 2), 4))
            width = 0.8 / len(rows)
            for k, r in enumerate(rows):
                vals = [r.metrics.get(m) or 0.0 for m in metrics]
                ax.bar([i + k * width for i in range(len(metrics))], vals, width,
                       label=row_label(r))
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(metrics))])
            ax.set_xticklabels(metrics, rotation=20, ha="right")
            ax.set_ylim(0, 1.05)
            ax.set_title(f"{name}: metrics per system")
            ax.legend(fontsize=7, ncol=2)
            fig.tight_layout()
            path = plot_dir / f"{_safe(name)}_metrics.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            files.append(str(path.relative_to(out_dir)))
        dist_rows = [r for r in tr.rows if r.distributions]
        if dist_rows:
            fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(dist_rows) + 2), 4))
            data, labels, colors = [], [], []
            for r in dist_rows:
                for key, color in (("aligned", "tab:green"), ("perturbed", "tab:red")):
                    data.append(r.distributions.get(key, []) or [0.0])  # type: ignore[union-attr]
                    labels.append(f"{row_label(r)}\n{key}")
                    colors.append(color)
            box = ax.boxplot(data, patch_artist=True)
            for patch, color in zip(box["boxes"], colors):
                patch.set_facecolor(color)
                patch.set_alpha(0.5)
            ax.set_xticks(range(1, len(labels) + 1))
            ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
            ax.set_ylabel("normalized reward")
            ax.set_title(f"{name}: rewards of aligned vs perturbed students")
            fig.tight_layout()
            path = plot_dir / f"{_safe(name)}_rewards.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            files.append(str(path.relative_to(out_dir)))
        conf_rows = [r for r in tr.rows if r.confusion]
        if conf_rows:
            fig, axes = plt.subplots(1, len(conf_rows), figsize=(3.2 * len(conf_rows), 3.2),
                                     squeeze=False)
            for ax, r in zip(axes[0], conf_rows):
                cm = r.confusion or []
                ax.imshow(cm, cmap="Blues")
                top = max((v for line in cm for v in line), default=0)
                for i, line in enumerate(cm):
                    for j, v in enumerate(line):
                        ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                                color="white" if v > top / 2 else "black")
                ax.set_xticks(range(len(ROLES)), ROLES, fontsize=7)
                ax.set_yticks(range(len(ROLES)), ROLES, fontsize=7)
                ax.set_xlabel("system", fontsize=7)
                ax.set_ylabel("reference", fontsize=7)
                ax.set_title(row_label(r), fontsize=8)
            fig.suptitle(f"{name}: role confusion (sentences)", fontsize=9)
            fig.tight_layout()
            path = plot_dir / f"{_safe(name)}_roles.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            files.append(str(path.relative_to(out_dir)))
        if files:
            made[name] = files
    return made


# --------------------------------------------------------------------------- files
def _write(path: Path, text: str) -> None:
    """Atomic write, then the usual permissions (the temporary file is created 0600)."""
    import os

    write_text_atomic(path, text)
    mask = os.umask(0)
    os.umask(mask)
    path.chmod(0o666 & ~mask)


def write_outputs(out_dir: str | Path, report: EvalReport, stats: RunStats,
                  details: Sequence[dict[str, Any]] = (), plots: bool = True) -> dict[str, str]:
    """Write metrics.json, timing.json, items.jsonl, plots and report.md (each atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "metrics.json", report.model_dump_json(indent=2) + "\n")
    _write(out / "timing.json", stats.model_dump_json(indent=2) + "\n")
    _write(out / "items.jsonl", "".join(
        json.dumps(d, ensure_ascii=False, default=str) + "\n" for d in details))
    made = make_plots(report, out) if plots else {}
    _write(out / "report.md", render_markdown(report, stats, made))
    return {"metrics": str(out / "metrics.json"), "report": str(out / "report.md")}


# --------------------------------------------------------------------------- compare
def load_report(path: str | Path) -> EvalReport:
    """Read a ``metrics.json`` (raises ``UsageError`` naming the file if it is not one)."""
    from pydantic import ValidationError

    p = Path(path)
    try:
        return EvalReport.model_validate_json(p.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise UsageError(f"{p}: not a gsrm-eval metrics file ({first})") from None


Diff = tuple[str, str, str, str, Any, Any]  # task, row, metric, note, a, b


def compare_reports(a: EvalReport, b: EvalReport, show_all: bool = False,
                    tolerance: float = 1e-9) -> list[Diff]:
    """Differences between two reports, metric by metric, rows matched by (system, judge).

    The note says ``better``/``worse`` (by the metric's direction), ``only in A/B`` or
    ``changed``/``same``; unchanged values are listed only with ``show_all``.
    """
    diffs: list[Diff] = []
    for task in sorted(set(a.tasks) | set(b.tasks)):
        ra = {(r.system, r.judge): r for r in (a.tasks[task].rows if task in a.tasks else [])}
        rb = {(r.system, r.judge): r for r in (b.tasks[task].rows if task in b.tasks else [])}
        for key in sorted(set(ra) | set(rb), key=lambda k: (k[0], k[1] or "")):
            label = f"{key[0]} / {key[1]}" if key[1] else key[0]
            ma = ra[key].metrics if key in ra else {}
            mb = rb[key].metrics if key in rb else {}
            for m in sorted(set(ma) | set(mb)):
                va, vb = ma.get(m), mb.get(m)
                if m not in ma:
                    diffs.append((task, label, m, "only in B", None, vb))
                elif m not in mb:
                    diffs.append((task, label, m, "only in A", va, None))
                elif isinstance(va, (int, float)) and isinstance(vb, (int, float)):
                    delta = vb - va
                    if abs(delta) <= tolerance:
                        if show_all:
                            diffs.append((task, label, m, "same", va, vb))
                    else:
                        better = (delta > 0) == higher_is_better(m)
                        diffs.append((task, label, m, "better" if better else "worse", va, vb))
                elif va != vb or show_all:
                    diffs.append((task, label, m, "changed" if va != vb else "same", va, vb))
    return diffs


def format_diffs(diffs: Sequence[Diff]) -> str:
    """A plain-text table of ``compare_reports`` output."""
    if not diffs:
        return "no differences\n"
    rows = [("task", "system", "metric", "A", "B", "delta", "")]
    for task, label, m, note, va, vb in diffs:
        delta = (f"{vb - va:+.3f}" if isinstance(va, (int, float))
                 and isinstance(vb, (int, float)) else "")
        rows.append((task, label, m, fmt(va), fmt(vb), delta, note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n"
                   for r in rows)
