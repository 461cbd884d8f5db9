#!/usr/bin/env python3
"""Import cycles between the modules (files) of each crate of the workspace.

A module depends on another when it names it by path: `use crate::a::b::…`, `crate::a::b::f()`,
`use super::…`, `super::x::…` (in its code or its tests). Declaring a child (`mod x;`) is not a
dependency, so a child that uses its parent is not a cycle. Each path resolves to the deepest
module file it names. Prints every cycle (a strongly connected component of more than one file)
and exits 1 if there is one.

Usage: scripts/module_cycles.py [CRATE_SRC_DIR…]   (default: every crate's src/ in the workspace)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def workspace_crates() -> list:
    """Every member of the workspace (the root Cargo.toml's `members`), as its src/ directory:
    a crate added to the workspace is covered without editing this script."""
    manifest = (ROOT / "Cargo.toml").read_text()
    found = re.search(r"^members\s*=\s*\[([^\]]*)\]", manifest, re.M)
    if not found:
        sys.exit("Cargo.toml has no [workspace] members list")
    members = re.findall(r'"([^"]+)"', found.group(1))
    return [f"{m}/src" for m in members]


def module_path(src: Path, file: Path) -> tuple:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod" or (len(parts) == 1 and parts[0] in ("lib", "main")):
        parts = parts[:-1]
    return tuple(parts)


def strip_comments(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def expand(tree: str) -> list:
    """`a::{b, c::{d, e}}` → ['a::b', 'a::c::d', 'a::c::e'] (top-level commas only)."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        return [tree] if tree else []
    prefix, inner = tree[:brace], tree[brace + 1:tree.rfind("}")]
    items, depth, start = [], 0, 0
    for i, c in enumerate(inner):
        depth += c == "{"
        depth -= c == "}"
        if c == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    return [prefix + rest for item in items for rest in expand(item)]


def paths_in(text: str) -> list:
    found = []
    for m in re.finditer(r"\buse\s+((?:crate|super)\b[^;]*);", text):
        found += expand(re.sub(r"\s+", "", re.sub(r"\s+as\s+\w+", "", m.group(1))))
    for m in re.finditer(r"\b((?:crate|super)(?:::(?:super|\w+))+)", text):
        found.append(m.group(1))
    return found


def resolve(path: str, here: tuple, modules: set):
    parts = path.split("::")
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    else:
        base = here
        while parts and parts[0] == "super":
            base = base[:-1]
            parts = parts[1:]
        rest = parts
    rest = [p for p in rest if p not in ("self", "*")]
    best = None
    for n in range(len(rest) + 1):
        candidate = base + tuple(rest[:n])
        if candidate in modules:
            best = candidate
    return best


def cycles(src: Path) -> list:
    files = {module_path(src, f): f for f in src.rglob("*.rs")}
    modules = set(files)
    graph = {m: set() for m in modules}
    for here, file in files.items():
        # A file's inline `mod tests { use super::… }` speaks for the file itself.
        text = strip_comments(file.read_text())
        text = re.sub(r"mod\s+tests\s*\{", "{", text)
        for p in paths_in(text):
            target = resolve(p, here, modules)
            if target is not None and target != here and target != here[:len(target)]:
                graph[here].add(target)
    # Tarjan's strongly connected components.
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted("::".join(c) or "(root)" for c in comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    crates = sys.argv[1:] or workspace_crates()
    found = False
    for crate in crates:
        src = (ROOT / crate) if not Path(crate).is_absolute() else Path(crate)
        for comp in cycles(src):
            found = True
            print(f"{crate}: cycle among {', '.join(comp)}")
    if not found:
        print(f"no import cycles in {len(crates)} crates")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
