"""Lists the production functions longer than a limit (80 lines by default) and exits 1 when
there is one.

Production code: the `.rs` files under `src/` of the root crate and of every crate in
`crates/` (benches, tests, examples and fuzz targets are not), each cut at its first
`#[cfg(test)]`. A function's length is counted from the line of its `fn` keyword to the line of
its closing brace, both included, blank and comment lines too (what a reader scrolls through).
Braces inside strings, chars and comments are skipped; a `fn` without a body (a trait's
declaration) has no length.

Usage: python3 scripts/long-functions.py [LIMIT [ROOT]]   (ROOT: the workspace, default this one)
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")


def code_only(text: str) -> str:
    """`text` with strings, chars and comments blanked (newlines kept), so braces count."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + len(hashes) + 2)
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i : j + 1]))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4] if text[i + 1:i + 2] != "\\" else text[i:i + 12]):
            m = re.match(r"'(\\[^']*|[^\\'])'", text[i:])
            j = i + len(m.group(0)) if m else i + 1
            out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(path: pathlib.Path):
    text = path.read_text(encoding="utf-8")
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    code = code_only(text)
    for match in FN.finditer(code):
        # The body starts at the first `{` after the signature, unless a `;` ends it first.
        brace = code.find("{", match.end())
        semi = code.find(";", match.end())
        if brace < 0 or (0 <= semi < brace):
            continue
        depth, i = 0, brace
        while i < len(code):
            if code[i] == "{":
                depth += 1
            elif code[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        first = code.count("\n", 0, match.start()) + 1
        last = code.count("\n", 0, i) + 1
        yield match.group(1), first, last - first + 1


def main() -> int:
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 80
    root = pathlib.Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else ROOT
    crates = root / "crates"
    roots = [root / "src"] + sorted(
        p / "src" for p in (crates.iterdir() if crates.is_dir() else []) if (p / "src").is_dir()
    )
    long = []
    for src in roots:
        for path in sorted(src.rglob("*.rs")):
            for name, line, length in functions(path):
                if length > limit:
                    long.append((length, f"{path.relative_to(root)}:{line}", name))
    for length, place, name in sorted(long, reverse=True):
        print(f"{length:4} {place} {name}")
    print(f"{len(long)} production functions over {limit} lines")
    return 1 if long else 0


if __name__ == "__main__":
    sys.exit(main())
