"""Baseline systems and the persistent decomposition cache.

Why: the baselines are the reference points of every table, so their splitting rules are
pinned down here; and the cache must give back exactly what was generated, under exactly
the GSRM's own key, survive a crash mid-append, and never be consulted for other settings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from eval.cache import CachedDecomposer, DecompositionCache
from eval.systems import (
    PLANNING_PLACEHOLDER,
    SYSTEMS,
    SystemOptions,
    SystemUnavailable,
    build_backend,
    cue_role,
    get_system,
)
from gsrm.backends import Backend, Generation, SentenceBackend
from gsrm.model import GSRM, strip_think
from gsrm.structure import Structure


def decompose(system: str, text: str) -> Structure:
    return GSRM(backend=build_backend(system)).decompose("p", text)


# --------------------------------------------------------------------------- baselines
@pytest.mark.parametrize(
    "system, text, metas",
    [
        # one step per non-blank line
        ("newline", "Add 2.\n\nThen 3.\nSo 5.", ["Add 2.", "Then 3.", "So 5."]),
        # one step per paragraph; lines inside a paragraph are joined by a space
        ("paragraph", "Add 2.\nThen 3.\n\n  \nSo 5.", ["Add 2. Then 3.", "So 5."]),
        # no line breaks: both give one step
        ("newline", "Add 2. Then 3.", ["Add 2. Then 3."]),
        # gsrm's own sentence backend
        ("sentences", "Add 2. Then 3.", ["Add 2.", "Then 3."]),
    ],
)
def test_line_paragraph_sentence_splitters(system, text, metas):
    s = decompose(system, text)
    assert [st.meta for st in s.steps] == metas
    assert s.warnings == ["no final-answer line"]  # nothing else was repaired


@pytest.mark.parametrize(
    "sentence, role",
    [
        ("First, find the eggs.", "meta"),
        ("Next: the money.", "meta"),
        ("Wait, that is wrong.", "meta"),
        ("Alternatively, use the formula.", "meta"),
        ("**Let's** check it.", "meta"),  # markup before the cue
        ("So x = 2.", "solve"),  # a conclusion cue starts a step but is solving
        ("Therefore the total is 9.", "solve"),
        ("Solve for x.", None),  # "So" must end at a word boundary
        ("Nowhere to go.", None),  # "Now" likewise
        ("The sum is 5.", None),
    ],
)
def test_cue_role(sentence, role):
    assert cue_role(sentence) == role


def test_cue_sentences_groups_and_roles():
    text = ("First, find the eggs left: 16 - 7 = 9. She keeps none. "
            "Wait, let me check. 7 + 9 = 16, fine. So she sells 9 eggs.")
    s = decompose("cue-sentences", text)
    # a cue starts a new step; "She keeps none." and "7 + 9 = 16, fine." continue one
    assert [(st.meta, st.subproblem, st.answer) for st in s.steps] == [
        ("First, find the eggs left: 16 - 7 = 9.", "She keeps none.", "She keeps none."),
        ("Wait, let me check.", "7 + 9 = 16, fine.", "16"),
        ("So she sells 9 eggs.", "So she sells 9 eggs.", "9"),
    ]
    # a step with only a planning sentence gets a placeholder sub-problem, so the
    # projection can tell its meta from its solving
    only = decompose("cue-sentences", "Next, think.")
    assert only.steps[0].subproblem == PLANNING_PLACEHOLDER


def test_rule_backends_have_no_chat_model():
    with pytest.raises(Exception, match="only decomposes"):
        build_backend("newline").generate([[{"role": "user", "content": "x"}]])


def test_registry():
    assert {"newline", "paragraph", "sentences", "cue-sentences", "smollm2-fewshot",
            "gsrm-ft"} <= set(SYSTEMS)
    assert get_system("smollm2-fewshot").kind == "lm"
    with pytest.raises(ValueError, match="unknown system"):
        get_system("gpt-5")


def test_gsrm_ft_needs_an_adapter(tmp_path, monkeypatch):
    monkeypatch.delenv("GSRM_ADAPTER", raising=False)
    monkeypatch.setattr("gsrm.weights.default_adapter_dir", lambda: None)  # an install without one
    with pytest.raises(SystemUnavailable, match="no fine-tuned adapter"):
        build_backend("gsrm-ft", SystemOptions())
    # a folder without adapter_config.json is not an adapter
    with pytest.raises(SystemUnavailable, match="adapter_config.json"):
        build_backend("gsrm-ft", SystemOptions(adapter=str(tmp_path)))


def test_gsrm_ft_defaults_to_the_shipped_adapter(monkeypatch):
    from gsrm.weights import default_adapter_dir

    monkeypatch.delenv("GSRM_ADAPTER", raising=False)
    shipped = default_adapter_dir()
    if shipped is None:
        pytest.skip("this install ships no adapter")
    backend = build_backend("gsrm-ft", SystemOptions(model="some/dir"))
    assert backend.adapter == str(shipped) and backend.shots == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["describer", "describer-pqa-brief", "describer-qa",
                                  "cpu-small"])
def test_gsrm_ft_takes_a_shipped_adapter_by_name(name: str) -> None:
    """``gsrm-eval --adapter describer-pqa-brief`` means what ``gsrm --adapter
    describer-pqa-brief`` means (it was refused as a missing folder)."""
    from eval.systems import find_adapter
    from gsrm.weights import adapters_dir

    if not (adapters_dir() / name / "adapter_config.json").is_file():
        pytest.skip(f"this install does not ship {name}")
    assert find_adapter(SystemOptions(adapter=name)) == adapters_dir() / name


@pytest.mark.parametrize(("name", "says"), [
    ("describer-pqa", "no longer shipped: use describer-pqa-brief"),  # replaced 2026-12-07
    ("describer-prev", "no longer shipped: use describer-qa"),  # its place taken 2026-12-07
    ("no-such-adapter", "not a shipped adapter"),
])
def test_an_unknown_adapter_name_is_refused_naming_the_shipped_ones(name: str, says: str,
                                                                    tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    """A bare name that is neither shipped nor a folder is refused at once, by every command
    (``gsrm.weights.resolve_adapter``), instead of after a hub download attempt; a retired
    name says what replaced it."""
    from eval.systems import SystemUnavailable, find_adapter
    from gsrm.weights import resolve_adapter

    monkeypatch.chdir(tmp_path)  # no folder of that name here
    with pytest.raises(ValueError, match=says) as err:
        resolve_adapter(name, None)
    assert "describer" in str(err.value).split("shipped")[-1]  # the shipped names are listed
    with pytest.raises(SystemUnavailable, match=says):
        find_adapter(SystemOptions(adapter=name))


def test_a_folder_named_like_a_bare_name_is_still_an_adapter_folder(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    from gsrm.weights import resolve_adapter

    (tmp_path / "my-lora").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_adapter("my-lora", None) == "my-lora"


def test_gsrm_ft_with_adapter_is_prompted_without_shots(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    backend = build_backend("gsrm-ft", SystemOptions(adapter=str(tmp_path), model="some/dir"))
    assert backend.shots == 0 and backend.adapter == str(tmp_path)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- cache
class CountingBackend(Backend):
    """Sentence decompositions, recording every batch (stands in for a slow model)."""

    name = "counting"

    def __init__(self, max_new_tokens: int = 64) -> None:
        super().__init__(max_new_tokens=max_new_tokens, shots=0)
        self.batches: list[list[tuple[str, str]]] = []

    def generate(self, conversations, max_new_tokens=None):  # pragma: no cover
        raise NotImplementedError

    def decompose_many(self, items: Sequence[tuple[str, str]]) -> list[Generation]:
        self.batches.append(list(items))
        return SentenceBackend().decompose_many(items)


ITEMS = [("p", "A long one. With two sentences."), ("p", "Short."), ("q", "Mid size text.")]


def test_cache_roundtrip_and_second_run_generates_nothing(tmp_path):
    path = tmp_path / "c.jsonl"
    b1 = CountingBackend()
    d1 = CachedDecomposer(GSRM(backend=b1), DecompositionCache(path), chunk_size=2)
    first = d1(ITEMS + [ITEMS[0]])  # a repeated item is decomposed once
    # misses go out shortest first, in chunks of 2
    assert b1.batches == [[ITEMS[1], ITEMS[2]], [ITEMS[0]]]
    assert d1.stats == {"hits": 0, "generated": 3}
    assert [s.n_steps for s in first] == [2, 1, 1, 2]
    # the file holds one record per key, keyed like GSRM's own cache
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    g = GSRM(backend=CountingBackend())
    assert {r["key"] for r in recs} == {g.cache_key(p, strip_think(r)) for p, r in ITEMS}

    b2 = CountingBackend()
    d2 = CachedDecomposer(GSRM(backend=b2), DecompositionCache(path))
    second = d2(ITEMS)
    assert b2.batches == [] and d2.stats == {"hits": 3, "generated": 0}
    assert [s.steps for s in second] == [s.steps for s in first[:3]]


def test_cache_key_covers_backend_settings(tmp_path):
    path = tmp_path / "c.jsonl"
    CachedDecomposer(GSRM(backend=CountingBackend(64)), DecompositionCache(path))(ITEMS)
    # a different max_new_tokens is a different decomposition: nothing is reused
    b = CountingBackend(128)
    d = CachedDecomposer(GSRM(backend=b), DecompositionCache(path))
    d(ITEMS)
    assert d.stats == {"hits": 0, "generated": 3}


def test_torn_last_line_is_skipped_and_reported(tmp_path):
    path = tmp_path / "c.jsonl"
    CachedDecomposer(GSRM(backend=CountingBackend()), DecompositionCache(path))(ITEMS[:2])
    with path.open("a") as fh:
        fh.write('{"key": "abc", "structure": {"ste')  # a crash mid-append
    cache = DecompositionCache(path)
    assert len(cache) == 2
    assert len(cache.problems) == 1 and ":3: unreadable cache record" in cache.problems[0]
    # the next append starts on a fresh line, so the new record is not glued to the torn one
    d = CachedDecomposer(GSRM(backend=CountingBackend()), cache)
    d([("z", "New one.")])
    again = DecompositionCache(path)
    assert len(again) == 3 and len(again.problems) == 1


def test_cached_structures_are_copies(tmp_path):
    d = CachedDecomposer(GSRM(backend=CountingBackend()), DecompositionCache(tmp_path / "c"))
    a = d(ITEMS[:1])[0]
    a.steps.clear()
    assert d(ITEMS[:1])[0].n_steps == 2


def test_no_cache_file_when_disabled(tmp_path):
    d = CachedDecomposer(GSRM(backend=CountingBackend()), None)
    assert d(ITEMS)[1].n_steps == 1
    assert not list(Path(tmp_path).iterdir())
