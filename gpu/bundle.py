"""Pack the GPU bundle into run-sized parts, and put it back together there (stdlib only).

Why parts: one run on the GPU machine receives at most 64 MiB (the repository included), and
the embedded SmolLM2 GGUF alone is 93.8 MiB. No faithful encoding fits one run: the file is
already 4-5 bits a weight (Q4_1 layers, a Q8_0 embedding), and xz, the best general
compressor at hand, takes it only to 86.2 MiB (gpu/README.md). So the xz-compressed GGUF is
cut into byte ranges carried by consecutive runs, as many as the room left by the repository
needs, and put back together byte for byte: the sha256 of the reassembled GGUF must equal the
original's, so the model on the GPU is exactly the one tested here.

Layout written by ``pack`` (``gpu/make_bundle.sh`` calls it), for N parts::

    <bundle>/part1/manifest.json  weights.gguf.xz.00                 (run 1: stash)
    ...
    <bundle>/partN/manifest.json  weights.gguf.xz.NN  wheels/*.whl   (run N: the checks)

Runs 1..N-1 copy their part to ``/tmp/gsrm-bundle`` (``stash``); run N carries the last part
and finds the others there. The wheels travel with the last part, so the run that does the
checks always has them, even if the machine was recycled in between and an earlier part is
lost (the LM stages then fail and say so; the others run). The split is balanced, so every
run has the same room for the repository to grow; ``pack`` refuses a bundle whose wheels
alone do not fit one run beside the repository. ``runs`` prints the device commands.

Example::

    $ python3 gpu/bundle.py runs --bundle gpu/bundle
    $ python3 gpu/bundle.py assemble --bundle gpu/bundle --bundle /tmp/gsrm-bundle --out /tmp/w
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
CHUNK = "weights.gguf.xz.{:02d}"
MANIFEST = "manifest.json"
DEFAULT_BUNDLE = "gpu/bundle"
"""Where make_bundle.sh writes the parts, relative to the checkout (git-ignored)."""
STASH = "/tmp/gsrm-bundle"
"""Where runs 1..N-1 leave their parts on the GPU machine for run N (run_checks.sh looks there)."""
STASH_TIMEOUT_S = 60
CHECKS_TIMEOUT_S = 560
"""run_checks.sh bounds itself to 480 s (CHECKS_TOTAL_S); the rest is its start and a margin."""


class BundleError(RuntimeError):
    """The bundle cannot be built or put back together (the message says why)."""


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(4 * MIB), b""):
            h.update(block)
    return h.hexdigest()


def mib(n: int) -> float:
    return round(n / MIB, 2)


def split_sizes(xz_bytes: int, wheels_bytes: int, room: int) -> list[int]:
    """Bytes of the compressed weights in each part; the wheels go with the last part.

    As few parts as fit: ``n = ceil((xz_bytes + wheels_bytes) / room)``, each at most
    ``room`` bytes with the wheels counted in the last one. Balanced: the parts' sizes (the
    wheels included) differ by a byte at most, the larger ones first, so every run has the
    same room for the repository to grow; only wheels larger than a balanced part make the
    last part bigger (it then carries the wheels alone, and the weights are shared evenly by
    the others). Raises BundleError when the wheels alone exceed ``room``.

    >>> split_sizes(100, 10, 200)  # one part
    [100]
    >>> split_sizes(100, 10, 60)  # 55 | 45 + 10
    [55, 45]
    >>> split_sizes(100, 11, 40)  # three parts: 37 | 37 | 26 + 11
    [37, 37, 26]
    >>> split_sizes(100, 30, 40)  # four parts of 33, 33, 32, 32 with the wheels
    [33, 33, 32, 2]
    >>> split_sizes(60, 39, 40)  # the wheels fill a part of their own: 30 | 30 | 0 + 39
    [30, 30, 0]
    >>> split_sizes(100, 41, 40)
    Traceback (most recent call last):
    ...
    gpu.bundle.BundleError: the wheels alone (41 bytes) pass the room of one part (40 bytes)
    """
    if room <= 0:
        raise BundleError(f"no room in a part ({room} bytes)")
    if wheels_bytes > room:
        raise BundleError(f"the wheels alone ({wheels_bytes} bytes) pass the room of one part "
                          f"({room} bytes)")
    total = xz_bytes + wheels_bytes
    n = max(1, -(-total // room))
    q, r = divmod(total, n)
    sizes = [q + 1 if i < r else q for i in range(n)]
    sizes[-1] -= wheels_bytes
    if sizes[-1] < 0:  # the wheels outweigh a balanced part: they ride alone in the last one
        q, r = divmod(xz_bytes, n - 1)
        sizes = [q + 1 if i < r else q for i in range(n - 1)] + [0]
    assert sum(sizes) == xz_bytes and max(sizes[:-1] + [sizes[-1] + wheels_bytes]) <= room
    return sizes


def pack(out: Path, xz: Path, gguf_name: str, gguf_sha256: str, gguf_bytes: int,
         wheels: Sequence[Path], repo_bytes: int, limit_bytes: int,
         bundle_dir: str | None = DEFAULT_BUNDLE) -> dict[str, Any]:
    """Write ``out/part1..partN`` (chunks, wheels in the last, a manifest in each); return it.

    ``bundle_dir`` is where ``out`` lies in the checkout that travels (the device commands
    name the parts by it, see :func:`device_runs`); None for a bundle outside the checkout.
    """
    wheel_bytes = sum(w.stat().st_size for w in wheels)
    room = limit_bytes - repo_bytes
    if room <= 0:
        raise BundleError(f"the repository alone ({mib(repo_bytes)} MiB) fills the "
                          f"{mib(limit_bytes)} MiB a run may carry")
    sizes = split_sizes(xz.stat().st_size, wheel_bytes, room)
    for old in out.glob("part*"):
        shutil.rmtree(old)
    parts: list[dict[str, Any]] = []
    chunks: list[dict[str, Any]] = []
    with xz.open("rb") as src:
        for i, size in enumerate(sizes):
            part = out / f"part{i + 1}"
            part.mkdir(parents=True)
            parts.append({"name": part.name, "bytes": size})
            if not size:  # only the wheels in this part (see split_sizes)
                continue
            chunk = part / CHUNK.format(i)
            with chunk.open("wb") as dst:
                left = size
                while left:
                    block = src.read(min(4 * MIB, left))
                    if not block:
                        raise BundleError(f"{xz} ended early")
                    dst.write(block)
                    left -= len(block)
            chunks.append({"part": part.name, "file": chunk.name, "bytes": size,
                           "sha256": sha256(chunk)})
        if src.read(1):
            raise BundleError(f"{xz} grew while it was being cut")
    last = out / parts[-1]["name"]
    (last / "wheels").mkdir()
    listed = []
    for w in sorted(wheels, key=lambda p: p.name.lower()):
        shutil.copy2(w, last / "wheels" / w.name)
        listed.append({"file": w.name, "bytes": w.stat().st_size, "sha256": sha256(w)})
    parts[-1]["bytes"] += wheel_bytes
    for p in parts:
        p["with_repo_bytes"] = p["bytes"] + repo_bytes
        p["mib"], p["with_repo_mib"] = mib(p["bytes"]), mib(p["with_repo_bytes"])
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gguf": {"name": gguf_name, "bytes": gguf_bytes, "sha256": gguf_sha256},
        "xz": {"bytes": xz.stat().st_size, "sha256": sha256(xz), "chunks": chunks},
        "wheels": listed,
        "wheels_part": parts[-1]["name"],
        "repo_bytes": repo_bytes,
        "limit_bytes": limit_bytes,
        "bundle_dir": bundle_dir,
        "parts": parts,
    }
    for p in parts:
        (out / p["name"] / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def device_runs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The device tool's ``run`` calls that carry the bundle, in order, from its manifest.

    Runs 1..N-1 each carry one part and stash it in ``/tmp`` (kept while the machine stays
    warm, about 30 s after a call); run N carries the last part (with the wheels) and runs
    the checks, which find the earlier parts in the stash.

    >>> m = {"bundle_dir": "gpu/bundle", "parts": [{"name": f"part{i}"} for i in (1, 2, 3)]}
    >>> for r in device_runs(m):
    ...     print(r["run"], r["command"], r["carry"], r["timeout_s"])
    1 python3 gpu/bundle.py stash --bundle gpu/bundle --stash /tmp/gsrm-bundle ['gpu/bundle/part1'] 60
    2 python3 gpu/bundle.py stash --bundle gpu/bundle --stash /tmp/gsrm-bundle ['gpu/bundle/part2'] 60
    3 bash gpu/run_checks.sh $OUT ['gpu/bundle/part3'] 560
    """
    where = manifest.get("bundle_dir", DEFAULT_BUNDLE)
    if where is None:
        raise BundleError("this bundle was built outside the checkout, so no run can carry "
                          "it; build it inside (make_bundle.sh's default, gpu/bundle)")
    names = [p["name"] for p in manifest["parts"]]
    runs = []
    for k, name in enumerate(names, start=1):
        if k < len(names):
            command = f"python3 gpu/bundle.py stash --bundle {where} --stash {STASH}"
            timeout = STASH_TIMEOUT_S
        else:
            command = "bash gpu/run_checks.sh $OUT"
            if where != DEFAULT_BUNDLE:
                command += f" --bundle {where}"
            timeout = CHECKS_TIMEOUT_S
        runs.append({"run": k, "of": len(names), "command": command,
                     "carry": [f"{where}/{name}"], "timeout_s": timeout})
    return runs


def find_manifest(dirs: Sequence[Path]) -> dict[str, Any]:
    """The manifest of the first part folder found under any of ``dirs``."""
    for d in dirs:
        for path in sorted(d.glob(f"part*/{MANIFEST}")):
            return json.loads(path.read_text())
    raise BundleError("no bundle part found in " + ", ".join(str(d) for d in dirs)
                      + " (build it with gpu/make_bundle.sh and carry gpu/bundle/partN)")


def locate(name: str, dirs: Sequence[Path], part: str) -> Path | None:
    """``part/name`` in the first of ``dirs`` that has it."""
    for d in dirs:
        path = d / part / name
        if path.is_file():
            return path
    return None


def _part_ok(part: Path, manifest: dict[str, Any]) -> bool:
    """Does ``part`` hold its chunk of ``manifest``'s weights, intact (size and sha256)?"""
    for c in manifest["xz"]["chunks"]:
        if c["part"] == part.name:
            path = part / c["file"]
            return (path.is_file() and path.stat().st_size == c["bytes"]
                    and sha256(path) == c["sha256"])
    return (part / MANIFEST).is_file()  # a part with no chunk (the wheels alone)


def stash(bundle: Path, stash_dir: Path) -> dict[str, Any]:
    """Copy the parts found in ``bundle`` to ``stash_dir`` (kept there while the machine is).

    Each copy's chunk is checked (size, sha256) against the manifest; parts of another
    bundle left in the stash are removed. Returns what was stashed, what the stash holds
    now, and ``lost``: parts before the last one stashed that are in neither place (the
    machine was recycled between the runs, so the sequence must start again from run 1).
    """
    found = sorted((p for p in bundle.glob("part*") if (p / MANIFEST).is_file()),
                   key=lambda p: _part_number(p.name))
    if not found:
        raise BundleError(f"no bundle part in {bundle}")
    manifest = json.loads((found[-1] / MANIFEST).read_text())
    stash_dir.mkdir(parents=True, exist_ok=True)
    for old in stash_dir.glob("part*"):  # another bundle's parts: of no use, and misleading
        mf = old / MANIFEST
        if not mf.is_file() or json.loads(mf.read_text())["xz"]["sha256"] != \
                manifest["xz"]["sha256"]:
            shutil.rmtree(old)
    copied = []
    for part in found:
        if not _part_ok(part, manifest):
            raise BundleError(f"{part}: its chunk is missing or differs from the manifest")
        dst = stash_dir / part.name
        if dst.exists() and _part_ok(dst, manifest):
            continue  # stashed by an earlier run, still intact
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(part, dst)
        if not _part_ok(dst, manifest):
            raise BundleError(f"{dst}: the copy differs from the manifest (disk full?)")
        copied.append(part.name)
    names = [p["name"] for p in manifest["parts"]]
    held = [n for n in names if (stash_dir / n / MANIFEST).is_file()]
    upto = max(names.index(p.name) for p in found)
    lost = [n for n in names[:upto] if n not in held]
    return {"stashed": copied, "in_stash": held, "lost": lost,
            "to_come": [n for n in names if n not in held], "to": str(stash_dir)}


def _part_number(name: str) -> int:
    """``part12`` -> 12 (parts sort by number, not by name).

    >>> sorted(["part10", "part2", "part1"], key=_part_number)
    ['part1', 'part2', 'part10']
    """
    digits = name[4:]
    return int(digits) if digits.isdigit() else 0


def wheels(dirs: Sequence[Path]) -> list[Path]:
    """The bundle's wheels, checked against the manifest (sha256)."""
    manifest = find_manifest(dirs)
    found = []
    for w in manifest["wheels"]:
        path = locate(f"wheels/{w['file']}", dirs, manifest["wheels_part"])
        if path is None:
            raise BundleError(f"wheel {w['file']} ({manifest['wheels_part']}) not found")
        if sha256(path) != w["sha256"]:
            raise BundleError(f"{path}: sha256 differs from the manifest (damaged copy)")
        found.append(path)
    return found


def _decompressor() -> tuple[str, Any]:
    try:
        import lzma

        return "lzma", lzma.LZMADecompressor()
    except ImportError:  # a Python built without _lzma: the xz program does the same
        return "xz", None


def assemble(dirs: Sequence[Path], out: Path) -> dict[str, Any]:
    """Check every chunk, decompress their concatenation to ``out/<gguf name>``, check it."""
    manifest = find_manifest(dirs)
    chunk_paths = []
    missing = []
    for c in manifest["xz"]["chunks"]:
        path = locate(c["file"], dirs, c["part"])
        if path is None:
            missing.append(c["part"])
            continue
        if path.stat().st_size != c["bytes"] or sha256(path) != c["sha256"]:
            raise BundleError(f"{path}: size or sha256 differs from the manifest")
        chunk_paths.append(path)
    if missing:
        n = len(manifest["parts"])
        raise BundleError(
            f"{', '.join(missing)} of {n} not found in " + ", ".join(map(str, dirs))
            + f": {' and '.join(missing)} {'was' if len(missing) == 1 else 'were'} not "
            "carried, or the machine was recycled since the run that carried it; carry the "
            f"parts again, in {n} consecutive runs")
    out.mkdir(parents=True, exist_ok=True)
    target = out / manifest["gguf"]["name"]
    tmp = target.with_suffix(".part")
    t0 = time.perf_counter()
    how, dec = _decompressor()
    if dec is not None:
        with tmp.open("wb") as dst:
            for path in chunk_paths:
                with path.open("rb") as src:
                    for block in iter(lambda s=src: s.read(4 * MIB), b""):
                        dst.write(dec.decompress(block))
        if not dec.eof:
            raise BundleError("the compressed weights end early (a chunk is missing or short)")
    else:
        with tmp.open("wb") as dst:
            proc = subprocess.Popen(["xz", "-dc"], stdin=subprocess.PIPE, stdout=dst)
            assert proc.stdin is not None
            for path in chunk_paths:
                with path.open("rb") as src:
                    shutil.copyfileobj(src, proc.stdin, 4 * MIB)
            proc.stdin.close()
            if proc.wait() != 0:
                raise BundleError("xz -d failed on the compressed weights")
    got = sha256(tmp)
    if got != manifest["gguf"]["sha256"]:
        tmp.unlink()
        raise BundleError(f"the reassembled GGUF's sha256 {got} is not the original's "
                          f"{manifest['gguf']['sha256']}")
    tmp.replace(target)
    return {"gguf": str(target), "bytes": target.stat().st_size, "sha256": got,
            "decompressed_with": how, "seconds": round(time.perf_counter() - t0, 2),
            "chunks": [str(p) for p in chunk_paths]}


def repo_bytes(repo: Path) -> int:
    """Bytes a device run sends of ``repo``: tracked and untracked-not-ignored files, shared/."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], capture_output=True, check=True).stdout
    names = {n for n in out.decode().split("\0") if n}
    total = sum((repo / n).stat().st_size for n in names if (repo / n).is_file())
    shared = repo / "shared"
    if shared.is_dir():
        total += sum(p.stat().st_size for p in shared.rglob("*") if p.is_file())
    return total


def _relative(out: Path, repo: Path) -> str | None:
    """``out`` relative to the checkout (the device tool's ``carry`` names paths inside it),
    or None when it lies outside (such a bundle cannot travel; a test may build one)."""
    try:
        return out.resolve().relative_to(repo.resolve()).as_posix()
    except ValueError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """``pack``, ``stash``, ``runs``, ``assemble``, ``wheels`` or ``repo-bytes``; prints JSON;
    1 on error, 3 when ``stash`` finds an earlier part lost."""
    p = argparse.ArgumentParser(prog="python3 gpu/bundle.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="cut the bundle into parts (make_bundle.sh)")
    pk.add_argument("--out", type=Path, required=True)
    pk.add_argument("--xz", type=Path, required=True, help="the xz-compressed GGUF")
    pk.add_argument("--gguf", type=Path, required=True, help="the original GGUF (name, sha256)")
    pk.add_argument("--wheels", type=Path, required=True, help="folder of .whl files")
    pk.add_argument("--repo", type=Path, required=True, help="the checkout that travels")
    pk.add_argument("--limit-mib", type=float, default=60.0, help="MiB per run, repo included")
    st = sub.add_parser("stash", help="copy carried parts out of the repo (runs 1..N-1 on "
                        "the GPU); exits 3 when an earlier run's part is lost")
    st.add_argument("--bundle", type=Path, required=True)
    st.add_argument("--stash", type=Path, default=Path(STASH))
    ru = sub.add_parser("runs", help="the device commands for this bundle, one JSON a run")
    ru.add_argument("--bundle", type=Path, required=True)
    asm = sub.add_parser("assemble", help="check the parts and rebuild the GGUF")
    asm.add_argument("--bundle", type=Path, action="append", required=True,
                     help="folder holding part folders (repeatable: the bundle, the stash)")
    asm.add_argument("--out", type=Path, required=True)
    wh = sub.add_parser("wheels", help="print the checked wheel paths, one a line")
    wh.add_argument("--bundle", type=Path, action="append", required=True)
    rb = sub.add_parser("repo-bytes", help="bytes a device run sends of the checkout")
    rb.add_argument("--repo", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        if args.cmd == "pack":
            whls = sorted(args.wheels.glob("*.whl"))
            if not whls:
                raise BundleError(f"no wheels in {args.wheels}")
            where = _relative(args.out, args.repo)
            result: Any = pack(args.out, args.xz, args.gguf.name, sha256(args.gguf),
                               args.gguf.stat().st_size, whls, repo_bytes(args.repo),
                               int(args.limit_mib * MIB), bundle_dir=where)
        elif args.cmd == "stash":
            result = stash(args.bundle, args.stash)
            if result["lost"]:
                print(json.dumps(result))
                print(f"gpu/bundle.py stash: error: {', '.join(result['lost'])} stashed by an "
                      "earlier run is gone (the machine was recycled between the runs): send "
                      "the runs again from run 1, each right after the last", file=sys.stderr)
                return 3
        elif args.cmd == "runs":
            for run in device_runs(find_manifest([args.bundle])):
                print(json.dumps(run))
            return 0
        elif args.cmd == "assemble":
            result = assemble(args.bundle, args.out)
        elif args.cmd == "wheels":
            print("\n".join(str(w) for w in wheels(args.bundle)))
            return 0
        else:
            result = {"repo_bytes": repo_bytes(args.repo)}
    except (BundleError, OSError, subprocess.CalledProcessError) as exc:
        print(f"gpu/bundle.py {args.cmd}: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
