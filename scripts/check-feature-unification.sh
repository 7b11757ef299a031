#!/bin/sh
# Prints the crates in polars' dependency closure whose features differ between the
# release builds of `-p dxtrace`, `-p web --examples` and `-p analysis --examples`
# (each difference recompiles all of polars); exits 1 if there is any. Needs a nightly
# cargo for --unit-graph (builds nothing). See workspace-hack/Cargo.toml.
set -eu
cd "$(dirname "$0")/.."
NIGHTLY=${NIGHTLY:-nightly-2026-05-20}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cargo +"$NIGHTLY" build --release --locked -p dxtrace -Z unstable-options --unit-graph >"$dir/a.json"
cargo +"$NIGHTLY" build --release --locked -p web --examples -Z unstable-options --unit-graph >"$dir/b.json"
cargo +"$NIGHTLY" build --release --locked -p analysis --examples -Z unstable-options --unit-graph >"$dir/c.json"
python3 - "$dir/a.json" "$dir/b.json" "$dir/c.json" <<'PY'
import json, sys

def closure(path):
    units = json.load(open(path))["units"]
    name = lambda u: u["pkg_id"].split("#")[-1]
    todo = [i for i, u in enumerate(units)
            if name(u).startswith("polars@") and u["target"]["name"] == "polars"]
    seen = set()
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            todo += [d["index"] for d in units[i]["dependencies"]]
    out = {}
    for i in seen:
        u = units[i]
        key = f'{name(u)} {u["target"]["name"]} {u["mode"]}'
        out.setdefault(key, set()).add(",".join(sorted(u["features"])))
    return out

builds = ["-p dxtrace", "-p web --examples", "-p analysis --examples"]
cs = [closure(p) for p in sys.argv[1:]]
bad = 0
for key in sorted(set().union(*cs)):
    vs = [frozenset(c.get(key, {"<absent>"})) for c in cs]
    if len(set(vs)) > 1:
        bad += 1
        print(key)
        for b, v in zip(builds, vs):
            print(f"    {b}: {sorted(v)}")
print(f"{len(cs[0])} units in polars' closure, {bad} with differing features")
sys.exit(1 if bad else 0)
PY
