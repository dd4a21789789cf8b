"""Pack the GPU bundle into run-sized parts, and put it back together there (stdlib only).

Why parts: one run on the GPU machine receives at most 64 MiB (the repository included), and
the embedded SmolLM2 GGUF alone is 93.8 MiB. No faithful encoding fits one run: the file is
already 4-5 bits a weight (Q4_1 layers, a Q8_0 embedding), and xz, the best general
compressor at hand, takes it only to 86.2 MiB (gpu/README.md). So the xz-compressed GGUF is
cut into two byte ranges carried by two consecutive runs, and put back together byte for byte:
the sha256 of the reassembled GGUF must equal the original's, so the model on the GPU is
exactly the one tested here.

Layout written by ``pack`` (``gpu/make_bundle.sh`` calls it)::

    <bundle>/part1/manifest.json  weights.gguf.xz.00                 (run 1)
    <bundle>/part2/manifest.json  weights.gguf.xz.01  wheels/*.whl   (run 2)

The wheels travel with the last part, so the run that does the checks always has them, even
if the machine was recycled in between and the first part is lost (the LM stages then fail
and say so; the others run). The split is balanced, so both runs have the same room for the
repository to grow; ``pack`` refuses a bundle that cannot fit under ``--limit-mib`` with the
repository's size added to each part.

Example::

    $ python3 gpu/bundle.py assemble --bundle gpu/bundle --stash /tmp/gsrm-bundle --out /tmp/w
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

    One part when everything fits ``room``; else two, balanced so that both parts are the
    same size give or take a byte. Raises BundleError when two parts are not enough.

    >>> split_sizes(100, 10, 200)
    [100]
    >>> split_sizes(100, 10, 60)  # parts of 55 and 45 + 10 bytes
    [55, 45]
    """
    total = xz_bytes + wheels_bytes
    if total <= room:
        return [xz_bytes]
    first = (total + 1) // 2
    if first > room or first > xz_bytes:
        raise BundleError(f"{total} bytes of weights and wheels need 2 x {first} bytes; each "
                          f"part has room for {room}")
    return [first, xz_bytes - first]


def pack(out: Path, xz: Path, gguf_name: str, gguf_sha256: str, gguf_bytes: int,
         wheels: Sequence[Path], repo_bytes: int, limit_bytes: int) -> dict[str, Any]:
    """Write ``out/part1..`` (chunks, wheels, a manifest in each) and return the manifest."""
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
            parts.append({"name": part.name, "bytes": size})
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
        "parts": parts,
    }
    for p in parts:
        (out / p["name"] / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


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


def stash(bundle: Path, stash_dir: Path) -> list[str]:
    """Copy every part found in ``bundle`` to ``stash_dir`` (kept there while the machine is)."""
    copied = []
    for part in sorted(bundle.glob("part*")):
        if (part / MANIFEST).is_file():
            dst = stash_dir / part.name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(part, dst)
            copied.append(part.name)
    if not copied:
        raise BundleError(f"no bundle part in {bundle}")
    return copied


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
    for c in manifest["xz"]["chunks"]:
        path = locate(c["file"], dirs, c["part"])
        if path is None:
            raise BundleError(
                f"{c['part']}/{c['file']} not found in " + ", ".join(map(str, dirs))
                + f": {c['part']} was not carried, or the machine was recycled since the run "
                "that carried it; carry the parts again, in consecutive runs")
        if path.stat().st_size != c["bytes"] or sha256(path) != c["sha256"]:
            raise BundleError(f"{path}: size or sha256 differs from the manifest")
        chunk_paths.append(path)
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


def main(argv: Sequence[str] | None = None) -> int:
    """``pack``, ``stash``, ``assemble``, ``wheels`` or ``repo-bytes``; prints JSON; 1 on error."""
    p = argparse.ArgumentParser(prog="python3 gpu/bundle.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="cut the bundle into parts (make_bundle.sh)")
    pk.add_argument("--out", type=Path, required=True)
    pk.add_argument("--xz", type=Path, required=True, help="the xz-compressed GGUF")
    pk.add_argument("--gguf", type=Path, required=True, help="the original GGUF (name, sha256)")
    pk.add_argument("--wheels", type=Path, required=True, help="folder of .whl files")
    pk.add_argument("--repo", type=Path, required=True, help="the checkout that travels")
    pk.add_argument("--limit-mib", type=float, default=60.0, help="MiB per run, repo included")
    st = sub.add_parser("stash", help="copy carried parts out of the repo (run 1 on the GPU)")
    st.add_argument("--bundle", type=Path, required=True)
    st.add_argument("--stash", type=Path, required=True)
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
            result: Any = pack(args.out, args.xz, args.gguf.name, sha256(args.gguf),
                               args.gguf.stat().st_size, whls, repo_bytes(args.repo),
                               int(args.limit_mib * MIB))
        elif args.cmd == "stash":
            result = {"stashed": stash(args.bundle, args.stash), "to": str(args.stash)}
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
