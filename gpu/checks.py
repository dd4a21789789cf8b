"""Helpers of ``gpu/run_checks.sh``: the JSON summary, and the stages that are Python.

Why a summary file rewritten after every stage: the GPU machine is lent for minutes and only
``OUTDIR`` comes back; a stage that fails or times out must leave its record (status, seconds,
the tail of its output) and the stages after it must still run, and a run cut short must still
return what it measured so far. The figures the README quotes are gathered under ``figures``.

Subcommands (each prints one JSON line or updates the summary; run_checks.sh calls them):

- ``init`` / ``record`` / ``finish``: the summary (``record`` reads a stage's stdout, whose
  last JSON line is its result).
- ``env``: Python, torch, CUDA, the GPU, and each key package's version and origin (carried
  in the bundle or preinstalled).
- ``weights``: load the default GSRM base model (``$GSRM_WEIGHTS`` when set) on a device and
  decode a few tokens greedily: the check that the carried weights load.
- ``segmenter``: the GSRM's default decomposer is two-stage, and its first stage is the
  trained step segmenter shipped in ``gsrm/adapters/segmenter/`` (its weights and tokenizer:
  it needs torch, ``tokenizers`` and ``safetensors``, all preinstalled on the GPU machine):
  load it and segment the example trace, so that a failure there is told apart from the LM's.
- ``pytest-outcomes``: per-test outcomes from a ``pytest -v`` log (also of a run that was killed).
- ``grpo-report``: reward curves (PNG, if matplotlib is there) and per-step figures from
  ``rlkd-train``'s ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TAIL_LINES = 25
KEY_PACKAGES = ["torch", "transformers", "tokenizers", "accelerate", "peft", "trl", "datasets",
                "safetensors", "gguf", "pydantic", "pydantic_core", "pydantic-settings",
                "fastapi", "starlette", "uvicorn", "openai", "prometheus_client", "math-verify",
                "huggingface-hub", "numpy", "pytest"]


# --------------------------------------------------------------------------- summary
def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def last_json_line(text: str) -> Any:
    """The last line of ``text`` that parses as a JSON object, or None.

    >>> last_json_line('noise\\n{"a": 1}\\nmore noise\\n')
    {'a': 1}
    """
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def tail(text: str, n: int = TAIL_LINES) -> list[str]:
    return [line[:400] for line in text.splitlines()[-n:]]


def status_of(rc: int) -> str:
    """ok / timeout / failed from an exit status (``timeout`` exits 124, or 137 once killed).

    >>> [status_of(rc) for rc in (0, 1, 124, 137)]
    ['ok', 'failed', 'timeout', 'timeout']
    """
    if rc == 0:
        return "ok"
    return "timeout" if rc in (124, 137) else "failed"


def init(summary: Path, mode: str, argv: Sequence[str]) -> None:
    _write(summary, {"check": "gsrm gpu/run_checks.sh", "mode": mode, "argv": list(argv),
                     "host": socket.gethostname(), "python": sys.version.split()[0],
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "stages": [], "figures": {}})


def record(summary: Path, name: str, rc: int | None, seconds: float, timeout: float | None,
           stdout: Path | None, stderr: Path | None, status: str | None = None,
           reason: str | None = None) -> dict[str, Any]:
    """Append one stage's record to the summary and return it."""
    data = json.loads(summary.read_text())
    out = stdout.read_text(errors="replace") if stdout and stdout.is_file() else ""
    err = stderr.read_text(errors="replace") if stderr and stderr.is_file() else ""
    rec: dict[str, Any] = {"name": name, "status": status or status_of(rc or 0), "rc": rc,
                           "seconds": round(seconds, 1), "timeout_s": timeout}
    if reason:
        rec["reason"] = reason
    result = last_json_line(out)
    if result is not None:
        rec["result"] = result
    if rec["status"] not in ("ok", "skipped"):
        rec["tail"] = tail(err or out)
    data["stages"].append(rec)
    _figures(data, rec)
    _write(summary, data)
    return rec


def _figures(data: dict[str, Any], rec: dict[str, Any]) -> None:
    """Copy the numbers worth quoting from a stage's result into ``figures``."""
    res, fig = rec.get("result") or {}, data["figures"]
    if rec["name"] == "decode" and "batch" in res:
        fig["decode_tokens_per_s"] = {b: v["tokens_per_s"] for b, v in res["batch"].items()}
        fig["decode_dtype"], fig["decode_device"] = res.get("dtype"), res.get("device")
    elif rec["name"] == "throughput" and "sets" in res:
        fig["decompose_traces_per_s"] = {k: v["traces_per_s"] for k, v in res["sets"].items()}
        fig["decompose_batch_size"] = res.get("batch_size")
        fig.setdefault("decomposer", {})["throughput"] = res.get("decomposer")
        fig["decompose_segment_s"] = {k: v.get("segment_s") for k, v in res["sets"].items()}
    elif rec["name"] == "grpo" and isinstance(res.get("gsrm"), dict):
        fig.setdefault("decomposer", {})["grpo"] = res["gsrm"].get("decomposer")
        fig["grpo_gsrm_decompositions"] = res["gsrm"].get("decompositions")
    elif rec["name"] == "segmenter" and res:
        fig["segmenter"] = {"identity": res.get("segmenter"), "spans": res.get("spans"),
                            "segment_s": res.get("segment_s")}
    elif rec["name"] == "grpo_report" and res:
        fig["grpo_steps"] = res.get("steps")
        fig["grpo_mean_step_s"] = res.get("mean_step_s")
        fig["grpo_reward_first_last"] = [res.get("reward_first"), res.get("reward_last")]
    elif rec["name"] == "slow_tests" and res:
        fig["slow_tests"] = res.get("counts")
    elif rec["name"] == "weights" and res:
        fig["weights_load_s"] = res.get("convert_s")


def finish(summary: Path) -> dict[str, Any]:
    data = json.loads(summary.read_text())
    counts: dict[str, int] = {}
    for s in data["stages"]:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data["stage_counts"] = counts
    data["all_ok"] = all(s["status"] in ("ok", "skipped") for s in data["stages"])
    _write(summary, data)
    return {"summary": str(summary), "stage_counts": counts, "all_ok": data["all_ok"]}


# --------------------------------------------------------------------------- stages
def env_report() -> dict[str, Any]:
    """Interpreter, torch/CUDA/GPU, and where each key package comes from."""
    import importlib.metadata as md

    site = os.environ.get("GSRM_BUNDLE_SITE", "")
    packages: dict[str, Any] = {}
    for name in KEY_PACKAGES:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            packages[name] = None
            continue
        where = str(dist.locate_file(""))
        packages[name] = {"version": dist.version,
                          "from": "bundle" if site and where.startswith(site) else where}
    report: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable,
                              "platform": platform.platform(), "cpu_count": os.cpu_count(),
                              "packages": packages}
    try:
        import torch

        report["torch_cuda"] = torch.version.cuda
        report["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            report["gpu"] = {"name": props.name,
                             "memory_gib": round(props.total_memory / 2**30, 1),
                             "bf16": torch.cuda.is_bf16_supported()}
    except Exception as exc:  # noqa: BLE001 - a broken torch is what this stage reports
        report["torch_error"] = repr(exc)
    return report


def weights_check(device: str, dtype: str, max_new_tokens: int = 16) -> dict[str, Any]:
    """Load the default base model (as the GSRM does) on ``device`` and decode greedily."""
    from gsrm.backends import TransformersBackend
    from gsrm.weights import default_model_dir, default_source, weights_override

    t0 = time.perf_counter()
    source = default_source()
    folder = default_model_dir()
    convert_s = time.perf_counter() - t0
    backend = TransformersBackend(adapter="none", device=device, dtype=dtype,
                                  max_new_tokens=max_new_tokens, stop_repeats=False)
    t1 = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - t1
    conv = [{"role": "user", "content": "What is 12 times 7? Answer in one sentence."}]
    t2 = time.perf_counter()
    gen = backend.generate([conv], max_new_tokens)[0]
    return {"source": str(source), "from_setting": weights_override() is not None,
            "model_dir": str(folder), "convert_s": round(convert_s, 2),
            "load_s": round(load_s, 2), "generate_s": round(time.perf_counter() - t2, 2),
            "device": backend.device, "dtype": dtype, "text": gen.text,
            "completion_tokens": gen.completion_tokens}


def segmenter_check(device: str = "cpu") -> dict[str, Any]:
    """Load the shipped step segmenter (stage 1 of the two-stage decomposer) and segment the
    repository's example trace: its identity, the spans, the seconds, and what it imported."""
    import importlib.metadata as md

    from gsrm.model import GSRM
    from gsrm.segment import get_segmenter

    root = Path(__file__).resolve().parents[1]
    example = json.loads((root / "examples" / "teacher.json").read_text("utf-8"))
    t0 = time.perf_counter()
    seg = get_segmenter(device=device)
    spans = seg.segment_many([example["reasoning"]])[0]
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    seg.segment_many([example["reasoning"]])
    versions = {}
    for name in ("tokenizers", "safetensors", "torch"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {"decomposer": GSRM().decomposer, "segmenter": seg.identity(),
            "device": device, "spans": len(spans), "trace_chars": len(example["reasoning"]),
            "first_span": example["reasoning"][slice(*spans[0])][:120] if spans else None,
            "load_and_segment_s": round(seconds, 3),
            "segment_s": round(time.perf_counter() - t1, 4), "packages": versions}


_WORDS = "PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS"
_PLAIN = re.compile(rf"^(\S+\.py::.*?) ({_WORDS})\b")  # tests/a.py::t[x y] PASSED  [ 5%]
_XDIST = re.compile(rf"^\[gw\d+\] \[\s*\d+%\] ({_WORDS}) (\S+\.py::.*?)\s*$")
_FINAL = re.compile(r"^=+ (.*\d+ (?:passed|failed|errors?|skipped|deselected).*) =+$")
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)\b")


def pytest_outcomes(log: str) -> dict[str, Any]:
    """Outcomes from ``pytest -v`` output (plain or pytest-xdist lines), also of a cut run.

    ``counts`` come from pytest's closing line when there is one, else from the per-test
    lines; ``not_passed`` names every test that did not pass.

    >>> r = pytest_outcomes("tests/a.py::t[x y] PASSED  [ 50%]\\n"
    ...                     "[gw1] [100%] FAILED tests/a.py::t2\\n")
    >>> r["counts"], r["not_passed"]
    ({'passed': 1, 'failed': 1}, {'tests/a.py::t2': 'failed'})
    """
    outcomes: dict[str, str] = {}
    final = None
    for line in log.splitlines():
        line = line.rstrip()
        m_final = _FINAL.match(line.strip())
        if m_final:
            final = m_final.group(1)
            continue
        m = _PLAIN.match(line)
        if m:
            outcomes[m.group(1)] = m.group(2).lower()
            continue
        m = _XDIST.match(line)
        if m:
            outcomes[m.group(2)] = m.group(1).lower()
    counts: dict[str, int] = {}
    if final:
        for n, word in _COUNT.findall(final):
            word = "error" if word.startswith("error") else word
            counts[word] = counts.get(word, 0) + int(n)
    else:
        for outcome in outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
    return {"counts": counts, "final_line": final, "seen": len(outcomes),
            "failed": [t for t, o in outcomes.items() if o in ("failed", "error")],
            "not_passed": {t: o for t, o in outcomes.items() if o != "passed"}}


def grpo_report(metrics: Path, png: Path | None) -> dict[str, Any]:
    """Per-step rewards from ``metrics.jsonl`` (written as training logs) and a PNG of them."""
    rows = []
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "reward" in row and "loss" in row:
                rows.append(row)
    names = sorted({k.split("/")[1] for r in rows for k in r
                    if k.startswith("rewards/") and k.endswith("/mean")})
    curves = {"reward": [r["reward"] for r in rows]}
    curves.update({n: [r.get(f"rewards/{n}/mean") for r in rows] for n in names})
    step_s = [r["step_time"] for r in rows if isinstance(r.get("step_time"), (int, float))]
    result: dict[str, Any] = {
        "steps": len(rows), "step": [r.get("step") for r in rows], "curves": curves,
        "reward_first": curves["reward"][0] if rows else None,
        "reward_last": curves["reward"][-1] if rows else None,
        "mean_step_s": round(sum(step_s) / len(step_s), 2) if step_s else None,
        "completion_length": [r.get("completions/mean_length") for r in rows],
    }
    if png is not None and rows:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
            axes[0].plot(result["step"], curves["reward"], marker="o")
            axes[0].set(title="weighted reward", xlabel="step")
            for n in names:
                axes[1].plot(result["step"], curves[n], marker="o", label=n)
            axes[1].set(title="reward components (mean)", xlabel="step")
            axes[1].legend()
            fig.tight_layout()
            fig.savefig(png, dpi=90)
            result["png"] = str(png)
        except ImportError as exc:
            result["png_error"] = repr(exc)
    return result


# --------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 gpu/checks.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("--summary", type=Path, required=True)
    i.add_argument("--mode", required=True)
    i.add_argument("argv", nargs="*")
    r = sub.add_parser("record")
    r.add_argument("--summary", type=Path, required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--rc", type=int, default=None)
    r.add_argument("--started-ns", type=int, default=None,
                   help="the stage's start, `date +%%s%%N` (seconds are counted to now)")
    r.add_argument("--timeout", type=float, default=None)
    r.add_argument("--stdout", type=Path, default=None)
    r.add_argument("--stderr", type=Path, default=None)
    r.add_argument("--status", default=None, help="override: skipped")
    r.add_argument("--reason", default=None)
    f = sub.add_parser("finish")
    f.add_argument("--summary", type=Path, required=True)
    sub.add_parser("env")
    w = sub.add_parser("weights")
    w.add_argument("--device", default="cpu")
    w.add_argument("--dtype", default="float32")
    sg = sub.add_parser("segmenter")
    sg.add_argument("--device", default="cpu", help="where the segmenter runs (the GSRM's "
                    "default: cpu)")
    po = sub.add_parser("pytest-outcomes")
    po.add_argument("--log", type=Path, required=True)
    g = sub.add_parser("grpo-report")
    g.add_argument("--metrics", type=Path, required=True)
    g.add_argument("--png", type=Path, default=None)
    args = p.parse_args(argv)

    if args.cmd == "init":
        init(args.summary, args.mode, args.argv)
        return 0
    if args.cmd == "record":
        seconds = (time.time_ns() - args.started_ns) / 1e9 if args.started_ns else 0.0
        rec = record(args.summary, args.name, args.rc, seconds, args.timeout, args.stdout,
                     args.stderr, args.status, args.reason)
        print(f"stage {rec['name']}: {rec['status']} ({rec['seconds']} s)", file=sys.stderr)
        return 0
    if args.cmd == "finish":
        out: Any = finish(args.summary)
    elif args.cmd == "env":
        out = env_report()
    elif args.cmd == "weights":
        out = weights_check(args.device, args.dtype)
    elif args.cmd == "segmenter":
        out = segmenter_check(args.device)
    elif args.cmd == "pytest-outcomes":
        out = pytest_outcomes(args.log.read_text(errors="replace") if args.log.is_file() else "")
        if not out["seen"] and not out["final_line"]:
            print(json.dumps(out))
            return 1
    else:
        out = grpo_report(args.metrics, args.png)
        if not out["steps"]:
            print(json.dumps(out))
            return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
