"""Greedy decoding with continuous batching: finished rows leave the batch, waiting prompts join.

Why not ``model.generate``: a decomposition batch mixes short and long outputs (an honest
GSM8K decomposition is 150-300 tokens, a looping one runs to the budget), and ``generate``
keeps every row in the batch until the longest is done. On the 2-core CPU this project
targets, a decode step of a 135M model costs about the same for 4 rows as for 1 and grows
slowly up to ~16, so the useful rows per step decide the throughput. This loop drops a row
the moment it ends (EOS, budget, or ``should_stop``) and refills the batch from the queue
once a quarter of it is free, so the batch stays full of rows that still produce tokens.

Layout. Rows share an optional prompt prefix (the system prompt and few-shot examples),
whose key/value cache is computed once by the caller and copied into each new group's
prefill. Each running row owns one slot of preallocated per-layer key/value buffers
(``_SlotLayer``), right-aligned: masked zeros, then ``prefix | padding | own prompt tail |
generated tokens``; padding is masked out and each row carries its own position ids, so a
row's positions and attention are those of its unpadded prompt. A finished row's slot is
taken by the last running row (one row copied); a new row goes into the next free slot; the
cache is widened (every row shifted right) only when a new prompt is wider than it.

Pure torch + a transformers ``DynamicCache`` subclass; no I/O.
``gsrm.backends.transformers.TransformersBackend`` calls ``greedy_decode`` and turns the token
ids into ``Generation`` results.
"""

from __future__ import annotations

import copy
import inspect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

StopCheck = Callable[[int, list[int]], bool]  # (index into tails, ids so far)


@dataclass
class Decoded:
    """One prompt's greedy continuation (without the EOS token) and why it ended."""

    ids: list[int] = field(default_factory=list)
    reason: str = "length"  # "eos" | "length" | "stop"


@dataclass
class _Row:
    index: int  # into ``tails`` (for ``should_stop``)
    next_pos: int  # position id of the token fed next
    out: Decoded = field(default_factory=Decoded)
    done: bool = False


def cache_kwarg(model: Any) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` in model forwards (5.x)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out: Any) -> Any:
    """The cache a forward returned (``cache`` in transformers 5.x, ``past_key_values`` before)."""
    if "cache" in getattr(out, "keys", lambda: ())():
        return out["cache"]
    return out.past_key_values


def _layer_tensors(cache: Any) -> list[tuple[Any, Any]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(cache.key_cache[i], cache.value_cache[i]) for i in range(len(cache.key_cache))]


class _SlotLayer:
    """One layer's keys/values for the running rows, in preallocated ``[rows, heads, cols, dim]``
    buffers; ``update`` (what the model calls) writes the new columns in place.

    Why not ``DynamicLayer``: it concatenates the whole history on every step (a copy of the
    cache per token per layer), and removing or adding rows would copy the whole batch
    again. Here a finished row is replaced by the last running row (one row copied), a new row
    is written into the next free slot, right-aligned to the current width with masked zeros
    to its left, and the width only grows (every row shifted right) when a new prompt is wider
    than the cache.
    """

    def __init__(self) -> None:
        self.kb: Any = None
        self.vb: Any = None
        self.rows = 0
        self.length = 0

    def _ensure(self, rows: int, cols: int, like: Any) -> None:
        import torch

        have_r, have_c = (self.kb.shape[0], self.kb.shape[2]) if self.kb is not None else (0, 0)
        if rows <= have_r and cols <= have_c:
            return
        new_c = have_c if cols <= have_c else max(cols, have_c + max(_SPARE, have_c // 4))
        shape = (max(rows, have_r), like.shape[1], new_c, like.shape[3])
        kb = torch.empty(shape, dtype=like.dtype, device=like.device)
        vb = torch.empty(shape, dtype=like.dtype, device=like.device)
        if self.kb is not None and self.rows:
            kb[: self.rows, :, : self.length] = self.kb[: self.rows, :, : self.length]
            vb[: self.rows, :, : self.length] = self.vb[: self.rows, :, : self.length]
        self.kb, self.vb = kb, vb

    def update(self, key_states: Any, value_states: Any) -> tuple[Any, Any]:
        r, q = key_states.shape[0], key_states.shape[2]
        self._ensure(r, self.length + q, key_states)
        n = self.length
        self.kb[:r, :, n : n + q] = key_states
        self.vb[:r, :, n : n + q] = value_states
        self.length = n + q
        return self.kb[:r, :, : n + q], self.vb[:r, :, : n + q]

    def widen(self, extra: int) -> None:
        """Shift every running row right by ``extra`` masked (zero) columns."""
        import torch

        if extra <= 0 or self.kb is None:
            self.length += max(0, extra)
            return
        shape = (self.kb.shape[0], self.kb.shape[1], self.length + extra + _SPARE, self.kb.shape[3])
        for name in ("kb", "vb"):
            old = getattr(self, name)
            new = torch.zeros(shape, dtype=old.dtype, device=old.device)
            new[: self.rows, :, extra : extra + self.length] = old[: self.rows, :, : self.length]
            setattr(self, name, new)
        self.length += extra

    def add_rows(self, keys: Any, values: Any) -> None:
        """Append rows whose cache is ``width <= length`` columns wide, right-aligned."""
        g, w = keys.shape[0], keys.shape[2]
        r, n = self.rows, self.length
        self._ensure(r + g, n, keys)
        self.kb[r : r + g, :, : n - w] = 0
        self.vb[r : r + g, :, : n - w] = 0
        self.kb[r : r + g, :, n - w : n] = keys
        self.vb[r : r + g, :, n - w : n] = values
        self.rows = r + g

    def move_row(self, src: int, dst: int) -> None:
        self.kb[dst, :, : self.length] = self.kb[src, :, : self.length]
        self.vb[dst, :, : self.length] = self.vb[src, :, : self.length]


def _slot_cache(layers: list[_SlotLayer]) -> Any:
    """A transformers ``Cache`` over the slot layers (what the model's forward is given)."""
    from transformers import DynamicCache

    class SlotCache(DynamicCache):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.slots = layers

        def update(self, key_states: Any, value_states: Any, layer_idx: int,
                   *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            return self.slots[layer_idx].update(key_states, value_states)

        def get_seq_length(self, layer_idx: int = 0, *args: Any, **kwargs: Any) -> int:
            return self.slots[layer_idx].length if self.slots else 0

        def get_mask_sizes(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
            query_length = _query_length(args, kwargs)
            return self.get_seq_length() + query_length, 0

        @property
        def is_compileable(self) -> bool:
            return False

    return SlotCache()


def _query_length(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """The query length from ``get_mask_sizes``' arguments (a cache_position tensor or an int)."""
    value = kwargs.get("query_length", kwargs.get("cache_position", args[0] if args else 1))
    if isinstance(value, int):
        return value
    return int(value.shape[0])


_SPARE = 256


def greedy_decode(
    model: Any,
    tails: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_ids: set[int],
    pad_id: int,
    batch_size: int = 16,
    prefix: Sequence[int] = (),
    prefix_cache: Any = None,
    should_stop: StopCheck | None = None,
    stop_every: int = 4,
    stop_min_new: int = 48,
    refill_at: float = 0.75,
    prefill_chunk: int = 8,
    device: str = "cpu",
    stats: dict[str, float] | None = None,
) -> list[Decoded]:
    """Greedy continuations of ``prefix + tail`` for each tail, decoded with continuous batching.

    ``prefix_cache`` is the model's cache of ``prefix`` for one row (copied, never modified).
    ``should_stop(i, ids)`` (``i`` indexes ``tails``) is asked every ``stop_every`` tokens once
    a row has ``stop_min_new``;
    True ends the row with reason ``"stop"``. Rows are admitted shortest prompt first, up to
    ``batch_size`` at a time; a new group is prefilled once the running batch has shrunk to
    ``refill_at * batch_size`` rows or fewer, at most ``prefill_chunk`` prompts per forward
    (which bounds the prefill's attention memory). Results keep the order of ``tails``.
    ``stats``, if given, accumulates seconds spent prefilling, decoding and in ``should_stop``,
    decode steps and row-steps (their ratio is the mean batch occupancy).
    """
    import time

    import torch

    key = cache_kwarg(model)
    plen = len(prefix)
    if plen and prefix_cache is None:
        raise ValueError("a prefix needs its prefix_cache")
    results = [Decoded() for _ in tails]
    queue = deque(sorted(range(len(tails)), key=lambda i: len(tails[i])))
    for i in list(queue):  # an empty budget or an empty prompt decodes nothing
        if max_new_tokens <= 0 or (not plen and not tails[i]):
            queue.remove(i)
    rows: list[_Row] = []  # rows[k] lives in slot k of every layer and of ``mask``
    layers: list[_SlotLayer] = []
    cache: Any = None
    mask: Any = None  # [slots, columns] long: 1 where a row attends
    bs = max(1, batch_size)
    threshold = max(0, int(bs * refill_at))
    st = stats if stats is not None else {}
    for k in ("prefill_s", "decode_s", "stop_s", "steps", "row_steps", "prefills"):
        st.setdefault(k, 0.0)

    def finish(row: _Row, token: int) -> None:
        """Record a row's next token and whether the row is done."""
        out = row.out
        row.next_pos += 1
        if token in eos_ids:
            row.done, out.reason = True, "eos"
            return
        out.ids.append(token)
        n = len(out.ids)
        if n >= max_new_tokens:
            row.done, out.reason = True, "length"
        elif should_stop is not None and n >= stop_min_new and n % stop_every == 0:
            t = time.perf_counter()
            if should_stop(row.index, out.ids):
                row.done, out.reason = True, "stop"
            st["stop_s"] += time.perf_counter() - t

    def prefill(group: list[int]) -> tuple[Any, Any, list[int]]:
        """Run a group of new prompts (left-padded after the shared prefix); first tokens."""
        tw = max(len(tails[i]) for i in group)
        ids = torch.tensor([[pad_id] * (tw - len(tails[i])) + list(tails[i]) for i in group],
                           device=device)
        new_mask = torch.tensor([[1] * plen + [0] * (tw - len(tails[i])) + [1] * len(tails[i])
                                 for i in group], device=device)
        pos = (new_mask.cumsum(-1) - 1).clamp(min=0)[:, plen:]
        if plen:
            new_cache = copy.deepcopy(prefix_cache)
            if len(group) > 1:
                new_cache.batch_repeat_interleave(len(group))
        else:
            from transformers import DynamicCache

            new_cache = DynamicCache()
        out = model(input_ids=ids, attention_mask=new_mask, position_ids=pos,
                    use_cache=True, logits_to_keep=1, **{key: new_cache})
        return output_cache(out), new_mask, out.logits[:, -1, :].argmax(-1).tolist()

    def admit(new_cache: Any, new_mask: Any) -> None:
        """Write a prefilled group into the next free slots (widening everything if needed)."""
        nonlocal mask
        tensors = _layer_tensors(new_cache)
        if not layers:
            layers.extend(_SlotLayer() for _ in tensors)
        width = new_mask.shape[1]
        length = layers[0].length
        if width > length:
            for layer in layers:
                layer.widen(width - length)
            if mask is not None:
                mask = torch.cat([mask.new_zeros((mask.shape[0], width - length)), mask], dim=1)
            length = width
        for layer, (k, v) in zip(layers, tensors):
            layer.add_rows(k, v)
        g = new_mask.shape[0]
        block = torch.cat([new_mask.new_zeros((g, length - width)), new_mask], dim=1)
        mask = block if mask is None or not len(rows) else torch.cat([mask[: len(rows)], block])

    with torch.inference_mode():
        while queue or rows:
            t0 = time.perf_counter()
            if queue and len(rows) <= threshold:
                take = [queue.popleft() for _ in range(min(bs - len(rows), len(queue)))]
                for c in range(0, len(take), max(1, prefill_chunk)):
                    group = take[c : c + max(1, prefill_chunk)]
                    new_cache, new_mask, first = prefill(group)
                    admit(new_cache, new_mask)
                    new_rows = [_Row(index=i, next_pos=plen + len(tails[i]), out=results[i])
                                for i in group]
                    for row, tok in zip(new_rows, first):
                        finish(row, tok)
                    rows = rows + new_rows
                if cache is None:
                    cache = _slot_cache(layers)
                st["prefill_s"] += time.perf_counter() - t0
                st["prefills"] += 1
            else:
                last = torch.tensor([[r.out.ids[-1]] for r in rows], device=device)
                pos = torch.tensor([[r.next_pos - 1] for r in rows], device=device)
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
                out = model(input_ids=last, attention_mask=mask, position_ids=pos,
                            use_cache=True, **{key: cache})
                for row, tok in zip(rows, out.logits[:, -1, :].argmax(-1).tolist()):
                    finish(row, tok)
                st["decode_s"] += time.perf_counter() - t0
                st["steps"] += 1
                st["row_steps"] += len(rows)
            # finished rows leave: the last running row moves into each freed slot
            k = 0
            while k < len(rows):
                if not rows[k].done:
                    k += 1
                    continue
                last_slot = len(rows) - 1
                if k != last_slot:
                    for layer in layers:
                        layer.move_row(last_slot, k)
                    mask[k] = mask[last_slot]
                    rows[k] = rows[last_slot]
                rows.pop()
                for layer in layers:
                    layer.rows = len(rows)
            mask = mask[: len(rows)] if mask is not None else None
            if not rows:  # drained: the next group starts a fresh, narrow cache
                layers.clear()
                cache = mask = None
    return results

