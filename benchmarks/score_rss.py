"""Peak resident memory of one ``gsrm score`` run on the bundled raw-text example (one JSON line).

Why a subprocess: peak RSS must cover everything the CLI loads (torch, the LM, the embedding
judge), which only the child's ``ru_maxrss`` measures. Target (issue: core): under 2.5 GiB.

    python benchmarks/score_rss.py            # default model, raw text, embedding judge
    python benchmarks/score_rss.py -- --max-new-tokens 128 --threads 1
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_MIB = 2.5 * 1024


def main(argv: Sequence[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    if extra and extra[0] == "--":
        extra = extra[1:]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "gsrm.cli", "score", str(ROOT / "examples/teacher.json"),
               str(ROOT / "examples/student_aligned.json"), "--out", str(out), *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        result = json.loads(out.read_text()) if proc.returncode == 0 else None
    line = {
        "benchmark": "score_rss",
        "command": " ".join(["gsrm", *cmd[3:]]).replace(str(ROOT) + "/", ""),
        "exit_code": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak_mib, 1),
        "target_mib": TARGET_MIB,
        "target_met": proc.returncode == 0 and peak_mib < TARGET_MIB,
        "reward": result["reward"] if result else None,
        "completion_tokens": [result[s]["generation"]["completion_tokens"]
                              for s in ("teacher", "student")] if result else None,
    }
    print(json.dumps(line))
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
