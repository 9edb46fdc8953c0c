#!/usr/bin/env bash
# Builds the wheelhouse that scripts/bench/gpu_smoke.sh needs on a GPU machine without network, which has torch (and
# what torch brings: Triton, the CUDA libraries) but not the project's dependencies: every wheel of pyproject.toml's
# dependencies and of theirs, for one Python version and platform, less torch's own stack. Run it where PyPI answers:
#
#   bash scripts/bench/gpu_wheelhouse.sh wheelhouse 3.12 manylinux_2_28_x86_64
#
# pip resolves the dependencies for that target (`pip install --dry-run --report`, binary wheels only), the packages
# that only torch needs are left out (torch, triton, nvidia-*, networkx, ...: the GPU machine's own must stay, a second
# Triton would shadow the one its torch was built with), and the rest is fetched wheel by wheel with
# `pip download --no-deps --only-binary=:all:`. The pinned list is written beside the wheels (requirements.txt). On
# the GPU machine (docs/performance.md):
#
#   pip install --no-index --no-deps --target /tmp/site wheelhouse/*.whl && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${1:?usage: gpu_wheelhouse.sh DIR [PYTHON_VERSION (3.12)] [PLATFORM (manylinux_2_28_x86_64)]}"
python_version="${2:-3.12}"
platform="${3:-manylinux_2_28_x86_64}"
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A manylinux_2_N platform also takes the wheels of every older glibc (and their legacy names)
platforms=(--platform "$platform")
if [[ $platform =~ ^manylinux_2_([0-9]+)_(.+)$ ]]; then
    for ((n = BASH_REMATCH[1] - 1; n >= 5; n--)); do platforms+=(--platform "manylinux_2_${n}_${BASH_REMATCH[2]}"); done
    for legacy in manylinux2014 manylinux2010 manylinux1; do platforms+=(--platform "${legacy}_${BASH_REMATCH[2]}"); done
fi
target=(--only-binary=:all: --python-version "$python_version" --implementation cp "${platforms[@]}")

# The dependencies as pyproject.toml lists them
python3 - "$root/pyproject.toml" > "$work/dependencies.txt" <<'EOF'
import re
import sys

text = open(sys.argv[1]).read()
block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
print("\n".join(re.findall(r'"([^"]+)"', block)))
EOF
echo "resolving $(wc -l < "$work/dependencies.txt") dependencies for Python $python_version on $platform"
python3 -m pip install --quiet --dry-run --ignore-installed --target "$work/unused" --report "$work/report.json" \
    "${target[@]}" -r "$work/dependencies.txt"

# What to fetch: every resolved package reachable from a dependency without passing through torch, except the GPU
# runtime that comes with torch
python3 - "$work/report.json" "$work/dependencies.txt" > "$dir/requirements.txt" <<'EOF'
import json
import re
import sys

def key(name):
    return re.sub(r"[-_.]+", "-", name).lower()

install = json.load(open(sys.argv[1]))["install"]
versions = {key(item["metadata"]["name"]): item["metadata"]["version"] for item in install}
requires = {
    key(item["metadata"]["name"]): {key(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in item["metadata"].get("requires_dist", [])}
    for item in install
}
roots = [key(re.match(r"[A-Za-z0-9._-]+", line).group()) for line in open(sys.argv[2]) if line.strip()]
torch_stack = {"torch", "triton"}
keep, todo = set(), [r for r in roots if r not in torch_stack]
while todo:
    name = todo.pop()
    if name in keep or name not in versions or name in torch_stack or name.startswith("nvidia-"):
        continue
    keep.add(name)
    todo.extend(requires[name])
print("\n".join(f"{name}=={versions[name]}" for name in sorted(keep)))
EOF
echo "fetching $(wc -l < "$dir/requirements.txt") wheels into $dir"
python3 -m pip download --quiet --no-deps "${target[@]}" --dest "$dir" -r "$dir/requirements.txt"
echo "$(find "$dir" -name '*.whl' | wc -l) wheels, $(du -sh "$dir" | cut -f1) in $dir"
