"""Does the ``openvino`` backend describe steps like the ``transformers`` one, whatever the batch?

Prints ONE JSON line: on the spans of held-out GSM8K solutions (segmented by the shipped
segmenter, as the two-stage GSRM does), how many step descriptions of the openvino backend
(``--weights``, ``--precision``) are identical to the transformers backend's (float32), and
on a second set of spans how many come out the same when each span is described alone as
when all are described in one batch. Why: a reward must not depend on the engine that served
it, nor on which other completions shared its batch; the README's parity figures come from
here. The export the backend reads is written on first use (``gsrm-export-openvino`` does it
ahead of time).

Example::

    $ python benchmarks/openvino_parity.py --data ../shared/data
    $ python benchmarks/openvino_parity.py --weights f16
    $ python benchmarks/openvino_parity.py --weights int8 --precision auto
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout's gsrm
    sys.path.insert(0, str(ROOT))


def span_conversations(path: Path, start: int, stop: int, span_format: str | None = None
                       ) -> list[list[dict[str, str]]]:
    """Describer conversations for every step span of GSM8K test solutions [start, stop), in
    ``span_format`` (default: the one the shipped describer adapter was trained on)."""
    from gsrm.calibrate import strip_calculator
    from gsrm.describe import span_text
    from gsrm.segment import get_segmenter
    from gsrm.spanformat import get_span_format, span_format_of
    from gsrm.weights import resolve_adapter

    fmt = get_span_format(span_format or span_format_of(resolve_adapter("auto", None)))

    rows = [json.loads(line) for line in path.open(encoding="utf-8")][start:stop]
    items = [(r["question"], " ".join(strip_calculator(r["answer"]).split("####")[0].split()))
             for r in rows]
    spans = get_segmenter().segment_many([t for _, t in items])
    return [fmt.messages(p, span_text(t, s)) for (p, t), ss in zip(items, spans) for s in ss]


def gsm8k_test_file(data: str) -> Path | None:
    """``DATA/gsm8k/test.jsonl``, or None after saying on stderr that it is missing."""
    path = Path(data) / "gsm8k" / "test.jsonl"
    if path.is_file():
        return path
    print(f"error: {path} not found (pass --data DIR)", file=sys.stderr)
    return None


def _slice(value: str) -> tuple[int, int]:
    a, _, b = value.partition(":")
    return int(a), int(b)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the JSON line; 2 when the data file is missing."""
    from gsrm.backends.openvino import PRECISIONS
    from gsrm.openvino_export import WEIGHT_FORMATS

    p = argparse.ArgumentParser(prog="python benchmarks/openvino_parity.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data", help="data root holding gsm8k/")
    p.add_argument("--weights", default=WEIGHT_FORMATS[0], choices=WEIGHT_FORMATS)
    p.add_argument("--precision", default=PRECISIONS[0], choices=PRECISIONS)
    p.add_argument("--same-items", type=_slice, default=(1000, 1032),
                   help="GSM8K test items compared with transformers (default: 1000:1032)")
    p.add_argument("--batch-items", type=_slice, default=(1100, 1112),
                   help="GSM8K test items described alone and together (default: 1100:1112)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    path = gsm8k_test_file(args.data)
    if path is None:
        return 2
    from gsrm.backends import get_backend
    from gsrm.describe import DESCRIBE_MAX_NEW_TOKENS
    from gsrm.spanformat import get_span_format

    ov = get_backend("openvino", weights=args.weights, precision=args.precision,
                     threads=args.threads, batch_size=64)
    pt = get_backend("transformers", threads=args.threads, batch_size=64)

    def texts(backend: object, convs: list) -> list[str]:
        stop = get_span_format(backend.span_format).stop  # type: ignore[attr-defined]
        return [g.text for g in backend.generate(convs, DESCRIBE_MAX_NEW_TOKENS,  # type: ignore[attr-defined]
                                                 stop=stop)]

    same = span_conversations(path, *args.same_items)
    got, ref = texts(ov, same), texts(pt, same)
    batch = span_conversations(path, *args.batch_items)
    together = texts(ov, batch)
    alone = [texts(ov, [c])[0] for c in batch]
    print(json.dumps({
        "benchmark": "openvino_parity", "model": ov.model_id,
        "same_items": list(args.same_items), "spans": len(same),
        "identical_to_transformers": sum(a == b for a, b in zip(got, ref)),
        "batch_items": list(args.batch_items), "batch_spans": len(batch),
        "alone_equals_together": sum(a == b for a, b in zip(alone, together)),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
