#!/usr/bin/env python3
"""Prints README's Layout block from the source tree: every module of src/ (a file, or a
folder's mod.rs) with the first sentence of its `//!` doc. Run from the repository root:
`python3 scripts/layout.py`; with `--check` it only checks README.md and src/lib.rs
against the tree (scripts/test.sh runs that). A module without a `//!` doc is printed as such, so the
README cannot silently omit one."""
import os
import sys


def first_sentence(path):
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("//!"):
                lines.append(line[3:].strip())
            elif lines or line.strip():
                break
    text = " ".join(l for l in lines if l)
    if not text:
        return "(no module doc)"
    # The first sentence: up to the first '.', ':' or ';' followed by a space, outside
    # parentheses and code spans.
    depth, code = 0, False
    for i, c in enumerate(text):
        if c == "`":
            code = not code
        elif not code and c == "(":
            depth += 1
        elif not code and c == ")":
            depth -= 1
        elif not code and depth == 0 and c in ".:;" and (i + 1 == len(text) or text[i + 1] == " "):
            return text[:i]
    return text


def modules(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, ".")
            if name == "mod.rs":
                rel = os.path.dirname(rel) + "/"
            elif name == "tests.rs":
                continue
            out.append((rel, first_sentence(path)))
    return sorted(out, key=lambda m: m[0].replace("/", "\0").replace(".rs", ""))


def check(block, mods):
    """README's Layout block is this output; lib.rs's doc names every top-level module."""
    readme = open("README.md", encoding="utf-8").read()
    at = readme.find("## Layout")
    start = readme.find("```", at)
    end = readme.find("```", start + 3)
    ok = at >= 0 and readme[start:end + 3] == block
    if not ok:
        print("README.md's Layout differs from `python3 scripts/layout.py`", file=sys.stderr)
    lib = open("src/lib.rs", encoding="utf-8").read()
    doc = "\n".join(l for l in lib.splitlines() if l.startswith("//!"))
    for line in lib.splitlines():
        if line.startswith("pub mod "):
            name = line[len("pub mod "):].rstrip(";")
            if f"[`{name}`]" not in doc:
                print(f"src/lib.rs's module doc does not name `{name}`", file=sys.stderr)
                ok = False
    return ok


def main():
    mods = modules("src")
    missing = [m for m in mods if m[1] == "(no module doc)"]
    lines = ["```"]
    for path, doc in mods:
        depth = path.rstrip("/").count("/") - 1
        name = path if depth == 0 else path.rstrip("/").rsplit("/", 1)[1] + ("/" if path.endswith("/") else "")
        label = "  " * depth + name
        lines.append(f"{label:<24}{doc}" if len(label) < 24 else f"{label} {doc}")
    lines.append("```")
    block = "\n".join(lines)
    if "--check" in sys.argv[1:]:
        if not check(block, mods):
            sys.exit(1)
    else:
        print(block)
    if missing:
        print("modules without a //! doc: " + ", ".join(m[0] for m in missing), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
