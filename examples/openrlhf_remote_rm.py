"""Post OpenRLHF's remote-reward payload to gsrm-serve's ``/get_reward`` and print the answer.

Why: OpenRLHF calls a remote reward model with ``--remote_rm_url``; it posts
``{"query": [prompt + response, ...], "prompts": [prompt, ...], "labels": [label, ...]}``
(labels from ``--label_key``) and reads ``rewards`` (and ``scores`` / ``extra_logs``). This
script sends exactly that body, built the way OpenRLHF builds it (the student's chat template
applied to the prompt, the decoded response appended), so you can check a running server
before starting a long OpenRLHF job. It needs only the standard library.

Usage::

    $ gsrm-serve --port 8000 &                      # or: --backend sentences --judge lexical
    $ python examples/openrlhf_remote_rm.py --url http://127.0.0.1:8000/get_reward
    {"rewards": [...], "scores": [...], "extra_logs": {...}}

    # then, in OpenRLHF (dataset with columns: prompt, teacher_reasoning):
    $ python -m openrlhf.cli.train_ppo_ray ... --remote_rm_url http://127.0.0.1:8000/get_reward \\
          --input_key prompt --label_key teacher_reasoning --apply_chat_template
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def chatml_prompt(problem: str) -> str:
    """The prompt as OpenRLHF passes it after ``--apply_chat_template`` (ChatML students)."""
    return f"<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n"


def build_payload(problem: str, teacher: str, responses: Sequence[str]) -> dict[str, Any]:
    """OpenRLHF's ``/get_reward`` body for several responses to one prompt.

    >>> b = build_payload("2+3?", "Add 2 and 3.", ["<think>2+3=5</think> 5"])
    >>> b["query"][0].endswith("<think>2+3=5</think> 5<|im_end|>"), b["labels"]
    (True, ['Add 2 and 3.'])
    """
    prompt = chatml_prompt(problem)
    return {"query": [prompt + r + "<|im_end|>" for r in responses],
            "prompts": [prompt] * len(responses),
            "labels": [teacher] * len(responses)}


def post(url: str, body: dict[str, Any], api_key: str | None = None,
         timeout: float = 300.0) -> dict[str, Any]:
    """POST ``body`` as JSON; an HTTP error raises with the server's message."""
    req = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {api_key}"}
                                             if api_key else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        raise RuntimeError(f"{url} answered {exc.code}: {detail}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000/get_reward")
    p.add_argument("--teacher", default=str(HERE / "teacher.json"),
                   help="{problem, reasoning} JSON of the teacher")
    p.add_argument("--students", nargs="+", default=[str(HERE / "student_aligned.json"),
                                                     str(HERE / "student_misaligned.json")],
                   help="{reasoning} JSON files, one response each")
    p.add_argument("--api-key", default=None)
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args(argv)

    teacher = json.loads(Path(args.teacher).read_text(encoding="utf-8"))
    responses = []
    for path in args.students:
        s = json.loads(Path(path).read_text(encoding="utf-8"))
        responses.append(f"<think>{s['reasoning']}</think> {s.get('final_answer') or ''}".strip())
    body = build_payload(teacher["problem"], teacher["reasoning"], responses)
    try:
        out = post(args.url, body, args.api_key, args.timeout)
    except (RuntimeError, urllib.error.URLError, OSError) as exc:
        print(f"openrlhf_remote_rm: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
