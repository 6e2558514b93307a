#!/usr/bin/env python3
"""Lines of code that one build of a crate compiles: `bench/README.md`,
"Core-only figures".

    python3 bench/core_loc.py [--features F,G] FILE...

For each FILE, drops every item whose `#[cfg(...)]` is false for a Linux
build that is not a test or doc build and has only the given features
(`#[cfg(test)]` modules, `#[cfg(feature = "objects")]` items, the kqueue
branches of packet-sys), then counts the lines that hold code: not blank,
not only a comment (doc comments included), as tokei's "Code" column.
Prints one row per file and the total. Which files a build compiles is
the caller's list; `mod x;` lines are not followed.
"""

import re
import sys

TARGET = {"target_os": "linux", "target_family": "unix", "target_env": "gnu"}
TRUE_WORDS = {"unix"}


def classify(text):
    """One flag per character: True where it is code (strings are code),
    False in comments and whitespace."""
    code = [False] * len(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            for k in range(i, min(j + 1, n)):
                code[k] = not text[k].isspace()
            i = j + 1
        elif c == "r" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
                           or text[i - 1] == "b") and re.match(r'r#*"', text[i:]):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            for k in range(i, end):
                code[k] = not text[k].isspace()
            i = end
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if text.startswith("\\", i + 1):
                j = text.find("'", i + 3 if text.startswith("\\'", i + 1) else i + 2)
            elif i + 2 < n and text[i + 2] == "'":
                j = i + 2
            else:
                j = i
            for k in range(i, j + 1):
                code[k] = not text[k].isspace()
            i = j + 1
        else:
            code[i] = not c.isspace()
            i += 1
    return code


def eval_cfg(pred, features):
    pred = pred.strip()
    m = re.fullmatch(r"(any|all|not)\s*\((.*)\)", pred, re.S)
    if m:
        args, depth, cur = [], 0, ""
        for ch in m.group(2):
            if ch == "," and depth == 0:
                args.append(cur)
                cur = ""
                continue
            depth += ch == "("
            depth -= ch == ")"
            cur += ch
        if cur.strip():
            args.append(cur)
        vals = [eval_cfg(a, features) for a in args]
        return {"any": any, "all": all, "not": lambda v: not v[0]}[m.group(1)](vals)
    m = re.fullmatch(r'(\w+)\s*=\s*"([^"]*)"', pred)
    if m:
        key, value = m.groups()
        return value in features if key == "feature" else TARGET.get(key) == value
    return pred in TRUE_WORDS


def drop_false_cfgs(text, features):
    """The text with every item under a false `#[cfg]` blanked out (kept as
    newlines, so that line numbers stay)."""
    code = classify(text)
    out = list(text)
    for m in re.finditer(r"#\[cfg\(", text):
        start = m.start()
        if not code[start] or out[start] == " ":
            continue
        # The attribute's predicate, to the matching parenthesis.
        i, depth = m.end(), 1
        while depth:
            depth += (text[i] == "(") - (text[i] == ")")
            i += 1
        if eval_cfg(text[m.end():i - 1], features):
            continue
        i = text.index("]", i) + 1
        # The item: to `;` or `,` at depth 0, or through the block that
        # opens at depth 0 (and a `;` right after it, as in `use a::{b};`).
        depth = 0
        while i < len(text):
            ch = text[i] if code[i] else " "
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
                if depth < 0:
                    break
                if depth == 0 and ch == "}":
                    rest = text[i + 1:]
                    i += 1 + (len(rest) - len(rest.lstrip(" \t")))
                    if text[i:i + 1] in (";", ","):
                        i += 1
                    break
            elif ch in ";," and depth == 0:
                i += 1
                break
            i += 1
        for k in range(start, i):
            if out[k] != "\n":
                out[k] = " "
    return "".join(out)


def count(path, features):
    text = drop_false_cfgs(open(path, encoding="utf-8").read(), features)
    code = classify(text)
    lines, pos = 0, 0
    for line in text.split("\n"):
        lines += any(code[pos:pos + len(line)])
        pos += len(line) + 1
    return lines


def main(argv):
    features = set()
    if argv[:1] == ["--features"]:
        features = {f for f in argv[1].split(",") if f}
        argv = argv[2:]
    total = 0
    for path in argv:
        n = count(path, features)
        total += n
        print(f"{n:6}  {path}")
    print(f"{total:6}  total")


if __name__ == "__main__":
    main(sys.argv[1:])
