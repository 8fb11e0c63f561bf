#!/usr/bin/env python3
"""The code's shape: the longest non-test functions and the longest source files.

Usage: python3 deploy/local/code_shape.py [--functions N] [--file-lines N]

Reads api/src, mail-worker/src and shared/src; a `#[cfg(test)]` module and a file
named tests.rs count as tests. Brace counting skips strings, chars and comments well
enough for this code base (no raw strings hold braces in function bodies).
"""
import argparse
import pathlib
import re

ROOTS = ["api/src", "mail-worker/src", "shared/src"]
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")
TEST_MOD = re.compile(r"^\s*#\[cfg\(test\)\]")


def strip(line, state):
    """Drops comments and string/char literals; `state` carries a block comment."""
    out, i, n = [], 0, len(line)
    while i < n:
        if state["block"]:
            end = line.find("*/", i)
            if end < 0:
                return "".join(out)
            state["block"], i = False, end + 2
            continue
        c = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"], i = True, i + 2
            continue
        if c == '"':
            i += 1
            while i < n and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            i += 1
            continue
        if c == "'" and re.match(r"'(\\.|[^\\'])'", line[i:i + 4]):
            i += len(re.match(r"'(\\.|[^\\'])'", line[i:]).group(0))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def item_end(code, start):
    """The last line of the item starting at `start`, and whether it has a body."""
    depth, j, opened = 0, start, False
    while j < len(code):
        depth += code[j].count("{") - code[j].count("}")
        opened = opened or "{" in code[j]
        if opened and depth <= 0:
            break
        if not opened and code[j].rstrip().endswith(";"):
            break  # a declaration without a body
        j += 1
    return j, opened


def functions(path):
    lines = path.read_text().splitlines()
    state = {"block": False}
    code = [strip(l, state) for l in lines]
    found, skip_until, i = [], -1, 0
    while i < len(lines):
        if TEST_MOD.match(lines[i]):
            # the module (or item) under #[cfg(test)] is test code
            i = item_end(code, i + 1)[0] + 1
            continue
        m = FN.match(code[i])
        if m:
            j, opened = item_end(code, i)
            if opened:
                found.append((j - i + 1, f"{path}:{i + 1}", m.group(6)))
            i += 1  # nested fns are measured too, inside their parent's length
            continue
        i += 1
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--functions", type=int, default=10)
    ap.add_argument("--file-lines", type=int, default=600)
    args = ap.parse_args()
    files = sorted(p for r in ROOTS for p in pathlib.Path(r).rglob("*.rs") if p.name != "tests.rs")
    fns = sorted((f for p in files for f in functions(p)), reverse=True)
    print(f"longest non-test functions (of {len(fns)}):")
    for length, where, name in fns[: args.functions]:
        print(f"  {length:4d}  {name}  {where}")
    every = sorted(
        (len(p.read_text().splitlines()), str(p))
        for r in ROOTS + ["tests/src", "tests/bench/src"] for p in pathlib.Path(r).rglob("*.rs")
    )
    every += sorted(
        (len(p.read_text().splitlines()), str(p))
        for d in ["api/tests", "mail-worker/tests", "tests/tests"] for p in pathlib.Path(d).rglob("*.rs")
    )
    big = sorted((f for f in every if f[0] > args.file_lines), reverse=True)
    print(f"files over {args.file_lines} lines ({len(big)}):")
    for n, p in big:
        print(f"  {n:5d}  {p}")


if __name__ == "__main__":
    main()
