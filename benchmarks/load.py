"""Load benchmark of gsrm-serve on loopback; prints ONE JSON line on stdout.

Why: an RL trainer calls the reward server thousands of times per training step; this measures
what the server sustains on this machine and whether its targets (issue 3) hold:

(a) pre-structured teacher/student steps (judge only, default ``embedding`` judge): pairs/s,
    p50/p99 latency and errors at concurrency 1, 8 and 32 — one pair per request, so the
    dynamic batcher has to merge them. Students are drawn from the example problem's steps
    (``examples/*_steps.json``) with varied wording: every request is a distinct pair, built
    from a bounded pool of sentences whose embeddings the judge caches after the warm-up (the
    pool size is reported). ``a_novel`` repeats concurrency 32 with a never-seen sentence in
    every student step, so every pair costs fresh embeddings (no target; reported as measured).
(b) raw-text students decomposed by the default model (the server's default backend, or
    ``--backend``; small ``--max-new-tokens`` by default), one shared teacher (decomposed
    once, in the warm-up, then cached), at concurrency 1, 8 and 32: batching should give at
    least 2x the pairs/s of concurrency 1. Each student is an example student text made
    distinct by ``--marks`` (``raw_student``); ``--write-students FILE`` writes a run's
    students for ``benchmarks/decompose.py --breakdown``.
overhead: ``POST /v1/rewards`` with a batch of 32 pairs against ``GSRM.score_many`` on the same
    32 pairs in this process (same GSRM settings), median of ``--overhead-repeats``, for pool
    inputs (as in (a)) and for novel inputs.
soak (``--soak SECONDS``): scenario (a) at concurrency 8 for that long; the server's RSS at
    start and end (and samples in between).

Two servers are started in turn as subprocesses on 127.0.0.1 (free ports): A (judge-only work:
(a), overhead, soak; ``--threads-a`` torch threads, default 1, since this load generator shares
the small CPU) and B (generation: (b); ``--threads-b``, default torch's one per core, since the
load generator is then idle). With ``--url`` nothing is started, both phases use that server and
RSS is not measured. Everything is bounded in count and time.
Missed targets are reported with their measured values and ``targets_met`` booleans.

Example::

    $ python benchmarks/load.py --quick                 # seconds, smoke run
    $ python benchmarks/load.py --soak 300              # the full run quoted in the notes
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
EXAMPLES = ROOT / "examples"

# --------------------------------------------------------------------------- inputs
PREFIXES = ["", "First, ", "Next, ", "Now ", "So ", "Here ", "At this point, ", "Then "]
SUFFIXES = ["", " That comes first.", " This is needed next.", " Let me check it."]


def _vary(text: str, rng: random.Random) -> str:
    head = rng.choice(PREFIXES)
    body = text[0].lower() + text[1:] if head else text
    return head + body + rng.choice(SUFFIXES)


def _load(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


def pool_student(rng: random.Random, students: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    """A student from one of the example students, each part reworded from a bounded pool."""
    steps = copy.deepcopy(rng.choice(students))
    for st in steps:
        st["meta"] = _vary(st["meta"], rng)
        st["subproblem"] = _vary(st["subproblem"], rng)
    return steps


def novel_student(rng: random.Random, students: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    """A student whose meta and sub-problem texts were never seen (a random tag in each)."""
    steps = pool_student(rng, students)
    for st in steps:
        st["meta"] += f" [{rng.getrandbits(40):x}]"
        st["subproblem"] += f" [{rng.getrandbits(40):x}]"
    return steps


def pool_size(students: list[list[dict[str, str]]]) -> int:
    texts = set()
    for steps in students:
        for st in steps:
            for part in ("meta", "subproblem"):
                t = st[part]
                for p in PREFIXES:
                    for s in SUFFIXES:
                        texts.add((p + (t[0].lower() + t[1:] if p else t)) + s)
    return len(texts)


MARKS = ("spaces", "attempt", "opener")
"""How (b)'s raw students are made distinct (``--marks``; ``raw_student``)."""
OPENERS = ["Let me think.", "Okay.", "Right, let's see.", "Alright.", "Hmm."]


def spaced(text: str, i: int) -> str:
    """``text`` with a second space after some of the first seven words of every sentence:
    after word k when bit k of ``i`` is set (128 patterns; fewer for a shorter sentence).

    Why spaces: the segmenter's tokenizer splits on whitespace, so it sees the same words and
    finds the same steps as in ``text``, while the describer's prompts differ (its tokenizer
    keeps runs of spaces), so no span prompt is shared with another student's. Why near each
    sentence's start: two prompts that agree on their first 32 tokens past a cached block
    share that block in the engine's prefix cache, which real completions, worded apart,
    rarely do.

    >>> spaced("So 2 + 3 = 5. Done.", 5)
    'So  2 +  3 = 5. Done. '
    >>> spaced("So 2 + 3 = 5. Done.", 0)
    'So 2 + 3 = 5. Done.'
    """

    def sentence(m: re.Match[str]) -> str:
        words = m.group(0).split(" ")
        return " ".join(w + (" " if k < 7 and w and i >> k & 1 else "")
                        for k, w in enumerate(words))

    return re.sub(r"[^.!?]+[.!?]*\s*", sentence, text)


def raw_student(i: int, rng: random.Random, texts: list[str], marks: str = "spaces") -> str:
    """A distinct raw student trace: an example student with a varied opening sentence, made
    distinct from the others by ``marks``:

    - ``spaces`` (the default): extra spaces between its words (``spaced``, by the bits of
      ``i + 1``), so every sentence differs and the segmenter still finds the example's own
      steps;
    - ``attempt``: "(attempt N)" at the end of every sentence. The segmenter reads such a
      mark as a step of its own or a step's end, so the students have more, shorter steps
      than the example texts (the README's "The server's raw students" counts them), and
      sentences that differ only at their ends share prefix-cache blocks;
    - ``opener``: only the opening sentence differs.

    Why distinct: the describer describes identical span prompts once
    (``gsrm.describe.describe_many``), so students that differ only in their opening would
    share every later step's description and measure that sharing, not the describer; real
    completions of one problem share some steps, not all.
    """
    if marks not in MARKS:
        raise ValueError(f"unknown marks {marks!r}; choose one of {MARKS}")
    opener = rng.choice(OPENERS)
    text = rng.choice(texts)
    if marks == "spaces":
        return spaced(f"{opener} {text}", i + 1)
    if marks == "attempt":
        text = re.sub(r"([.!?])(\s+|$)", rf" (attempt {i})\1\2", text)
    return f"{opener} (attempt {i}) {text}"


def raw_texts() -> list[str]:
    """The example students' raw reasoning (aligned, misaligned): what (b)'s students vary."""
    return [_load("student_aligned.json")["reasoning"],
            _load("student_misaligned.json")["reasoning"]]


def b_requests(args: argparse.Namespace, concurrency: int) -> int:
    """How many raw-student requests (b) sends at ``concurrency``."""
    if concurrency <= 1:
        return int(args.b_min_requests)
    return max(args.b_min_requests, min(concurrency * args.b_rounds, args.b_max_requests))


def write_students(args: argparse.Namespace, path: str) -> int:
    """Write the raw students (b) sends at its last concurrency level, as JSON lines
    ``{"problem", "reasoning"}``, drawn as a ``--skip-a`` run draws them (the earlier levels'
    first), so ``benchmarks/decompose.py --breakdown --traces s=FILE`` times the describer on
    the very texts a run scores."""
    rng = random.Random(args.seed)
    problem = _load("teacher_steps.json")["problem"]
    texts = raw_texts()
    counter = iter(range(10**9))
    rows: list[str] = []
    for c in args.concurrency:
        rows = [json.dumps({"problem": problem,
                            "reasoning": raw_student(next(counter), rng, texts, args.marks)})
                for _ in range(b_requests(args, c))]
    tmp = Path(f"{path}.tmp")
    tmp.write_text("".join(r + "\n" for r in rows))
    tmp.replace(path)
    print(f"wrote {len(rows)} students ({args.marks}) to {path}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- server process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class ServerProcess:
    def __init__(self, args: argparse.Namespace, threads: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the server writes it
            "w+", prefix="gsrm-serve-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "server.app", "--host", "127.0.0.1", "--port",
               str(self.port), "--judge", "embedding",
               "--max-new-tokens", str(args.max_new_tokens), "--gen-batch-size",
               str(args.gen_batch_size), "--batch-window-ms", str(args.batch_window_ms),
               "--max-batch", str(args.max_batch), "--log-level", "warning"]
        if threads:
            cmd += ["--threads", str(threads)]
        if args.backend:
            cmd += ["--backend", args.backend]
        if args.describe_steps:
            cmd += ["--describe-steps", args.describe_steps]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.pid: int | None = self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def wait_ready(client: Any, url: str, timeout: float, proc: ServerProcess | None) -> float:
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc is not None and proc.proc.poll() is not None:
            proc.log.seek(0)
            raise RuntimeError(f"server exited: {proc.log.read()[-2000:]}")
        try:
            body = (await client.get(url + "/health")).json()
        except (OSError, ValueError, httpx.TransportError):  # not listening yet
            body = {}
        if body.get("status") == "ready":
            return time.perf_counter() - t0
        if body.get("status") == "failed":
            raise RuntimeError(f"server failed to load: {body.get('error')}")
        await asyncio.sleep(0.25)
    raise TimeoutError(f"server not ready after {timeout} s")


# --------------------------------------------------------------------------- driving load
def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


async def drive(client: Any, url: str, bodies: Any, concurrency: int, max_requests: int,
                max_seconds: float, pairs_per_request: int) -> dict[str, Any]:
    """Send up to ``max_requests`` (for at most ``max_seconds``) with ``concurrency`` workers.

    Each worker is one simulated trainer process with its own keep-alive connection (its own
    ``httpx.AsyncClient``): one shared client's connection pool costs more CPU per request at
    high concurrency than the server does, and would measure the load generator instead.
    """
    import httpx

    del client
    lat: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    t_start = time.perf_counter()
    deadline = t_start + max_seconds

    async def worker() -> None:
        nonlocal sent
        async with httpx.AsyncClient(timeout=900.0, limits=httpx.Limits(max_connections=1)
                                     ) as own:
            await one_worker(own)

    async def one_worker(own: Any) -> None:
        nonlocal sent
        while sent < max_requests and time.perf_counter() < deadline:
            sent += 1
            body = bodies(sent)
            t0 = time.perf_counter()
            try:
                r = await own.post(url + "/v1/rewards", content=body,
                                   headers={"content-type": "application/json"})
                ok = r.status_code == 200
                key = f"http_{r.status_code}"
            except Exception as exc:  # noqa: BLE001 - counted, never hidden
                ok, key = False, type(exc).__name__
            dt = time.perf_counter() - t0
            if ok:
                lat.append(dt)
            else:
                errors[key] = errors.get(key, 0) + 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t_start
    done = len(lat)
    return {
        "concurrency": concurrency, "requests": done + sum(errors.values()),
        "pairs": done * pairs_per_request, "seconds": round(elapsed, 2),
        "pairs_per_s": round(done * pairs_per_request / elapsed, 2) if elapsed else None,
        "p50_s": round(pct(lat, 50), 4) if lat else None,
        "p99_s": round(pct(lat, 99), 4) if lat else None,
        "errors": sum(errors.values()), "error_kinds": errors,
    }


def rewards_body(items: list[dict[str, Any]]) -> bytes:
    return json.dumps({"items": items}).encode()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    rng = random.Random(args.seed)
    teacher = _load("teacher_steps.json")
    problem = teacher["problem"]
    t_steps = teacher["steps"]
    students = [_load("student_aligned_steps.json")["steps"],
                _load("student_misaligned_steps.json")["steps"]]
    raw_teacher = _load("teacher.json")["reasoning"]
    examples = raw_texts()

    out: dict[str, Any] = {"url": args.url or "127.0.0.1 (started by load.py)",
                           "cpu_count": os.cpu_count()}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)

    def a_body(_: int) -> bytes:
        return rewards_body([{"problem": problem, "teacher": t_steps,
                              "student": pool_student(rng, students)}])

    # ------------------------------------------------------------------ server A: judge only
    if not (args.skip_a and args.soak <= 0):
        server = None if args.url else ServerProcess(args, args.threads_a)
        url = args.url or server.url  # type: ignore[union-attr]
        pid = server.pid if server else None
        out["server_a"] = {"torch_threads": _threads(args, args.threads_a)}
        try:
            async with httpx.AsyncClient(timeout=args.request_timeout, limits=limits) as client:
                out["server_a"]["ready_s"] = round(await wait_ready(client, url, 600, server), 1)
                out["server_a"]["rss_mb_ready"] = rss_mb(pid)
                # warm-up: embed the whole wording pool once (steady state of an RL run)
                warm = [{"problem": problem, "teacher": t_steps,
                         "student": pool_student(rng, students)} for _ in range(args.warmup_pairs)]
                for k in range(0, len(warm), 64):
                    r = await client.post(url + "/v1/rewards",
                                          content=rewards_body(warm[k:k + 64]),
                                          headers={"content-type": "application/json"})
                    r.raise_for_status()
                out["a_inputs"] = {"wording_pool_sentences": pool_size(students),
                                   "warmup_pairs": args.warmup_pairs, "pairs_per_request": 1,
                                   "teacher_steps": len(t_steps), "judge": "embedding"}
                if not args.skip_a:
                    out["a"] = [await drive(client, url, a_body, c, args.a_requests,
                                            args.a_seconds, 1) for c in args.concurrency]

                    def novel_body(_: int) -> bytes:
                        return rewards_body([{"problem": problem, "teacher": t_steps,
                                              "student": novel_student(rng, students)}])

                    out["a_novel"] = await drive(client, url, novel_body, max(args.concurrency),
                                                 args.a_requests, args.novel_seconds, 1)
                    out["overhead"] = await overhead(client, url, args, rng, problem, t_steps,
                                                     students)
                if args.soak > 0:
                    out["soak"] = await soak(client, url, a_body, args.soak, pid)
                out["server_a"]["rss_mb_end"] = rss_mb(pid)
        finally:
            if server is not None:
                server.stop()

    # ------------------------------------------------------------------ server B: generation
    if not args.skip_b:
        server = None if args.url else ServerProcess(args, args.threads_b)
        url = args.url or server.url  # type: ignore[union-attr]
        out["server_b"] = {"torch_threads": _threads(args, args.threads_b)}
        try:
            async with httpx.AsyncClient(timeout=args.request_timeout, limits=limits) as client:
                out["server_b"]["ready_s"] = round(await wait_ready(client, url, 600, server), 1)
                out["server_b"]["backend"] = (await client.get(url + "/health")).json().get("backend")
                # the teacher is decomposed once here; every later pair reuses it (cache)
                t0 = time.perf_counter()
                r = await client.post(url + "/v1/rewards", content=rewards_body(
                    [{"problem": problem, "teacher": raw_teacher, "student": examples[0]}]),
                    headers={"content-type": "application/json"})
                r.raise_for_status()
                out["b_inputs"] = {"max_new_tokens": args.max_new_tokens,
                                   "gen_batch_size": args.gen_batch_size,
                                   "teacher_decomposed_in_warmup_s":
                                       round(time.perf_counter() - t0, 2),
                                   "pairs_per_request": 1,
                                   "student_marks": args.marks,
                                   "describe_steps": args.describe_steps or "all"}
                counter = iter(range(10**9))

                def b_body(_: int) -> bytes:
                    return rewards_body([{"problem": problem, "teacher": raw_teacher,
                                          "student": raw_student(next(counter), rng, examples,
                                                                 args.marks)}])

                out["b"] = []
                for c in args.concurrency:
                    n = b_requests(args, c)
                    before = await server_batches(client, url)
                    level = await drive(client, url, b_body, c, n, args.b_seconds, 1)
                    # a group split over several worker batches waits for each in turn
                    level["server_batches"] = await server_batches(client, url) - before
                    out["b"].append(level)
                m = (await client.get(url + "/metrics")).text
                out["b_inputs"]["teacher_cache_hits"] = _metric(
                    m, "gsrm_decomposition_cache_hits_total")
                out["b_inputs"]["decompositions"] = _metric(m, "gsrm_decompositions_total")
        finally:
            if server is not None:
                server.stop()
    out["targets_met"] = targets(out)
    return out


def _threads(args: argparse.Namespace, n: int) -> Any:
    if args.url:
        return None
    return n or "torch default"


async def server_batches(client: Any, url: str) -> int:
    """Worker batches the server has run so far (its ``gsrm_batch_items`` histogram's count):
    the difference over a level says whether its requests went out as one batch or several."""
    count = _metric((await client.get(url + "/metrics")).text, "gsrm_batch_items_count")
    return int(count or 0)


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def overhead(client: Any, url: str, args: argparse.Namespace, rng: random.Random,
                   problem: str, t_steps: list[dict[str, str]],
                   students: list[list[dict[str, str]]]) -> dict[str, Any]:
    """/v1/rewards with 32 pairs vs GSRM.score_many on the same 32 pairs, in this process."""
    from gsrm.model import GSRM
    from gsrm.structure import Step

    if args.threads_a and not args.url:  # same torch threads as the server's worker
        import torch

        torch.set_num_threads(args.threads_a)
    gsrm = GSRM.from_names(backend=args.backend, judge="embedding",
                           backend_kwargs={"max_new_tokens": args.max_new_tokens})
    # same warm state as the server: the wording pool embedded once
    warm = [(problem, t_steps, pool_student(rng, students)) for _ in range(args.warmup_pairs)]
    gsrm.score_many(warm)
    res: dict[str, Any] = {"batch": 32, "repeats": args.overhead_repeats}
    for kind, make in (("pool", pool_student), ("novel", novel_student)):
        http_t, local_t = [], []
        for _ in range(args.overhead_repeats):
            items = [{"problem": problem, "teacher": t_steps, "student": make(rng, students)}
                     for _ in range(32)]
            triples = [(problem, [Step(**s) for s in t_steps], [Step(**s) for s in it["student"]])
                       for it in items]
            body = rewards_body(items)
            t0 = time.perf_counter()
            r = await client.post(url + "/v1/rewards", content=body,
                                  headers={"content-type": "application/json"})
            http_t.append(time.perf_counter() - t0)
            r.raise_for_status()
            t0 = time.perf_counter()
            local = gsrm.score_many(triples)
            local_t.append(time.perf_counter() - t0)
            got = [d["reward"] for d in r.json()["data"]]
            if got != [x.reward for x in local]:
                raise AssertionError("server and in-process rewards differ")
        h, loc = statistics.median(http_t), statistics.median(local_t)
        res[kind] = {"http_s": round(h, 4), "in_process_s": round(loc, 4),
                     "overhead_pct": round(100 * (h - loc) / loc, 1)}
    return res


async def soak(client: Any, url: str, body: Any, seconds: float, pid: int | None
               ) -> dict[str, Any]:
    samples = [rss_mb(pid)]
    t_end = time.perf_counter() + seconds
    runs = []
    while time.perf_counter() < t_end:
        left = t_end - time.perf_counter()
        runs.append(await drive(client, url, body, 8, 10**9, min(30.0, left), 1))
        samples.append(rss_mb(pid))
    start, end = samples[0], samples[-1]
    return {"seconds": seconds, "concurrency": 8,
            "pairs": sum(r["pairs"] for r in runs), "errors": sum(r["errors"] for r in runs),
            "rss_mb_start": start, "rss_mb_end": end, "rss_mb_samples": samples,
            "rss_growth_pct": round(100 * (end - start) / start, 1) if start and end else None}


def targets(out: dict[str, Any]) -> dict[str, Any]:
    t: dict[str, Any] = {}
    a32 = next((x for x in out.get("a", []) if x["concurrency"] == 32), None)
    if a32:
        t["a_200_pairs_per_s_at_32"] = (a32["pairs_per_s"] or 0) >= 200
        t["a_p99_under_1s_at_32"] = a32["p99_s"] is not None and a32["p99_s"] < 1.0
        t["a_zero_errors"] = all(x["errors"] == 0 for x in out["a"])
    b = out.get("b")
    if b:
        base = b[0]["pairs_per_s"] or 0
        best = max((x["pairs_per_s"] or 0) for x in b[1:]) if len(b) > 1 else 0
        t["b_speedup_over_c1"] = round(best / base, 2) if base else None
        t["b_batching_2x"] = bool(base) and best >= 2 * base
        t["b_zero_errors"] = all(x["errors"] == 0 for x in b)
    ov = out.get("overhead", {}).get("pool")
    if ov:
        t["overhead_within_10pct_pool"] = ov["overhead_pct"] <= 10
        t["overhead_within_10pct_novel"] = out["overhead"]["novel"]["overhead_pct"] <= 10
    s = out.get("soak")  # RSS of server A over the soak
    if s and s.get("rss_growth_pct") is not None:
        t["soak_rss_flat_within_10pct"] = s["rss_growth_pct"] <= 10
        t["soak_zero_errors"] = s["errors"] == 0
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="load.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=None, help="use a running server (loopback) instead of "
                   "starting one")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--a-requests", type=int, default=4000, help="(a) requests per level, at most")
    p.add_argument("--a-seconds", type=float, default=15.0, help="(a) seconds per level, at most")
    p.add_argument("--novel-seconds", type=float, default=10.0)
    p.add_argument("--warmup-pairs", type=int, default=512)
    p.add_argument("--b-min-requests", type=int, default=3, help="(b) requests at concurrency 1")
    p.add_argument("--b-rounds", type=int, default=2, help="(b) requests = concurrency x rounds")
    p.add_argument("--b-max-requests", type=int, default=32, help="(b) requests per level, at most")
    p.add_argument("--b-seconds", type=float, default=240.0, help="(b) seconds per level, at most")
    p.add_argument("--backend", default=None, help="decomposition backend of the servers "
                   "started here (default: gsrm-serve's own, openvino on a CPU)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--gen-batch-size", type=int, default=8, help="server B's --gen-batch-size "
                   "(the server's own default, 8): the transformers backend's batch; the "
                   "openvino backend runs at least 32 sequences together (the README's server "
                   "runs use 64; 8, i.e. 32, measured the same)")
    p.add_argument("--batch-window-ms", type=float, default=5.0)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--threads-a", type=int, default=1, help="torch threads of the judge-only "
                   "server (a, overhead, soak); 1 avoids oversubscribing a small CPU that also "
                   "runs this load generator (0: torch's default, one per core)")
    p.add_argument("--threads-b", type=int, default=0, help="torch threads of the generation "
                   "server (b), where the load generator is idle (0: torch's default)")
    p.add_argument("--overhead-repeats", type=int, default=7)
    p.add_argument("--request-timeout", type=float, default=900.0)
    p.add_argument("--soak", type=float, default=0.0, help="soak seconds (0: off)")
    from gsrm.readonly import DESCRIBE_STEPS

    p.add_argument("--describe-steps", choices=DESCRIBE_STEPS, default=None,
                   help="servers started here: describe every student step (all, the server's "
                        "default) or only the steps the reward reads (gsrm.readonly)")
    p.add_argument("--marks", choices=MARKS, default=MARKS[0],
                   help="(b): what makes each raw student distinct: spaces between its words "
                        "(every sentence differs, the example's own steps), '(attempt N)' in "
                        "every sentence (the default before 2026-12-07: more, shorter steps), "
                        "or only its opening sentence (later steps then described once for "
                        "the group); default: %(default)s")
    p.add_argument("--shared-spans", action="store_const", const="opener", dest="marks",
                   help="the same as --marks opener")
    p.add_argument("--write-students", metavar="FILE", default=None,
                   help="write (b)'s raw students of the last --concurrency level to FILE "
                        "(JSON lines, for benchmarks/decompose.py --traces) and exit")
    p.add_argument("--skip-a", action="store_true")
    p.add_argument("--skip-b", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny bounds: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.a_requests, args.a_seconds, args.novel_seconds = 200, 3.0, 2.0
        args.warmup_pairs, args.overhead_repeats = 64, 2
        args.b_min_requests, args.b_rounds, args.max_new_tokens = 1, 1, 16
        args.concurrency = [1, 8]
    if args.write_students:
        return write_students(args, args.write_students)
    out = asyncio.run(run(args))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
