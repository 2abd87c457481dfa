"""Finds import circles between the modules of each crate: a module that uses another module of
its crate which (directly or through others) uses it back. Prints every circle and exits 1 when
there is one.

A module is a file under a crate's `src/` (`a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` and
`main.rs` are the crate root, which is left out: it declares every module). A module uses
another when its non-test code names it through `crate::`, `super::` or a `use` of either
(`crate::a::b::Item` is a use of `a::b`, and of `a` only when `a::b` is no module). Code after
`#[cfg(test)]` is left out: tests may reach anywhere.

Usage: python3 scripts/module-cycles.py [CRATE_DIR ...]   (default: the root crate and crates/*)
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE = re.compile(r"\buse\s+((?:crate|super)::[^;]*);", re.S)


def expand(tree: str) -> list:
    """The paths of a `use` tree: `a::{b, c::{d, e}}` is a::b, a::c::d, a::c::e."""
    tree = re.sub(r"\s+", "", tree)
    open_at = tree.find("{")
    if open_at < 0:
        return [tree.split(" as ")[0]]
    prefix, inner = tree[:open_at], tree[open_at + 1 : tree.rindex("}")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    return [path for item in items if item and item != "self" for path in expand(prefix + item)]


def modules(src: pathlib.Path) -> dict:
    found = {}
    for path in src.rglob("*.rs"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "mod":
            parts.pop()
        if parts in (["lib"], ["main"]) or (parts and parts[0] == "bin"):
            continue
        found[tuple(parts)] = path
    return found


def non_test(text: str) -> str:
    cut = text.find("#[cfg(test)]")
    return text if cut < 0 else text[:cut]


def resolve(known: dict, here: tuple, base: str, rest: list) -> tuple | None:
    start = () if base == "crate" else here[:-1]
    while rest and rest[0] == "super":
        start = start[:-1]
        rest = rest[1:]
    best = None
    for n in range(1, len(rest) + 1):
        candidate = start + tuple(rest[:n])
        if candidate in known:
            best = candidate
    return best


def edges(known: dict) -> dict:
    graph = {m: set() for m in known}
    for module, path in known.items():
        text = non_test(path.read_text(encoding="utf-8"))
        refs = [(m.group(1), m.group(2).strip(":").split("::")) for m in PATH.finditer(text)]
        for m in USE.finditer(text):
            for path in expand(m.group(1)):
                base, _, rest = path.partition("::")
                refs.append((base, rest.split("::")))
        for base, rest in refs:
            target = resolve(known, module, base, [r for r in rest if r])
            # A module's own children (and itself) are not a circle.
            if target and target != module and target[: len(module)] != module and module[: len(target)] != target:
                graph[module].add(target)
    return graph


def circles(graph: dict) -> list:
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

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
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main(crates: list) -> int:
    failed = 0
    for crate in crates:
        known = modules(crate / "src")
        for component in circles(edges(known)):
            failed += 1
            names = ", ".join("::".join(m) for m in component)
            where = crate.relative_to(ROOT) if crate.is_relative_to(ROOT) and crate != ROOT else crate
            print(f"{'.' if crate == ROOT else where}: import circle: {names}")
    if not failed:
        print(f"no import circles in {len(crates)} crates")
    return 1 if failed else 0


if __name__ == "__main__":
    args = [pathlib.Path(a).resolve() for a in sys.argv[1:]]
    sys.exit(main(args or [ROOT, *sorted(p for p in (ROOT / "crates").iterdir() if (p / "src").is_dir())]))
