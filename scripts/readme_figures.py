#!/usr/bin/env python3
"""Figures quoted in README.md and bench/README.md, recomputed.

    python3 scripts/readme_figures.py            # print each figure, quoted and measured
    python3 scripts/readme_figures.py --check    # fail (exit 1) on any mismatch (.ci/run)
    python3 scripts/readme_figures.py --update   # write the measured figures into the texts

The figures are the ones a change to the code moves without anyone
re-running a benchmark: the core-only line counts (bench/README.md,
"Lines of code"; its own command is what runs here, so the text and the
script cannot disagree on what is counted), and which toolchain the
README says the tests need. Timings and throughput are not here: they
depend on the machine and live in bench/README.md with their dates.

Each figure is a (file, pattern, value) triple: the pattern's one group
is where the number is quoted; thousands take a comma as the texts write
them.
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read(path):
    return (ROOT / path).read_text()


def loc_commands():
    """The `python3 bench/core_loc.py ...` commands of bench/README.md's
    "Lines of code" section: the packet core's, then packet-sys's."""
    text = read("bench/README.md")
    section = text[text.index("### Lines of code"):]
    block = section[section.index("```sh\n") + 6:]
    block = block[: block.index("```")]
    joined = block.replace("\\\n", " ")
    commands = [l.strip() for l in joined.splitlines() if l.strip().startswith("python3 bench/core_loc.py")]
    if len(commands) != 2:
        sys.exit("readme_figures: expected two core_loc.py commands in bench/README.md, found %d" % len(commands))
    return commands


def loc_rows(command):
    """{file: lines} and the total of one core_loc.py command, run by bash
    (its globs and braces are bash's)."""
    out = subprocess.run(["bash", "-c", command], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    rows, total = {}, None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == "total":
            total = int(parts[0])
        elif len(parts) == 2 and parts[0].isdigit():
            rows[parts[1]] = int(parts[0])
    if total is None:
        sys.exit("readme_figures: no total from: " + command)
    return rows, total


def core_files_cover_lib_rs(command):
    """Every module src/lib.rs compiles without features (no #[cfg] line
    above its `mod`) must be in the core command's file list: a new core
    module left out would make the count too low."""
    lines = read("src/lib.rs").splitlines()
    missing = []
    for i, line in enumerate(lines):
        m = re.match(r"\s*(?:pub(?:\(crate\))? )?mod (\w+);", line)
        if not m:
            continue
        j = i - 1
        gated = False
        while j >= 0 and (lines[j].strip().startswith("#[") or lines[j].strip().startswith("//")):
            if lines[j].strip().startswith("#[cfg"):
                gated = True
            j -= 1
        name = m.group(1)
        if gated:
            continue
        if f"src/{name}.rs" not in command and f"src/{name}/" not in command:
            missing.append(name)
    return missing


def msrv_of_tests():
    """The newest rust-version among the packages `cargo test` builds for
    this workspace (dev-dependencies included), from cargo metadata."""
    import json

    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--all-features"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root = next(p["id"] for p in meta["packages"] if p["name"] == "packet-reactor")
    # Everything reachable from packet-reactor, dev-dependencies at the top
    # level only (cargo builds no dev-dependency of a dependency).
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        for dep in nodes[pid]["deps"]:
            kinds = {k["kind"] or "normal" for k in dep["dep_kinds"]}
            if kinds & {"normal", "build"} or (pid == root and "dev" in kinds):
                todo.append(dep["pkg"])
    best, who = (0,), None
    for pid in seen:
        rv = packages[pid].get("rust_version")
        if rv:
            v = tuple(int(x) for x in rv.split("."))
            if v > best:
                best, who = v, packages[pid]["name"]
    return ".".join(str(x) for x in best[:2]), who


def comma(n):
    return f"{n:,}"


def figures():
    """(label, file, regex with one group, measured value as quoted)."""
    core_cmd, sys_cmd = loc_commands()
    missing = core_files_cover_lib_rs(core_cmd)
    if missing:
        sys.exit("readme_figures: bench/README.md's core line count leaves out src/lib.rs's core modules: " + ", ".join(missing))
    (core_rows, core), (sys_rows, sys_) = loc_rows(core_cmd), loc_rows(sys_cmd)
    msrv, who = msrv_of_tests()
    # bench/README.md's table: packet's files on the left, packet-sys's
    # (by base name, some with a note) on the right.
    rows = [
        (f"lines of {f} (bench/README table)", "bench/README.md", r"\n\| `" + re.escape(f) + r"` \| ([\d,]+) \|", comma(n))
        for f, n in core_rows.items()
    ] + [
        (f"lines of {f} (bench/README table)", "bench/README.md",
         r"\| \| `" + re.escape(f.split("/")[-1]) + r"`(?: \([^)|]*\))? \| ([\d,]+) \|", comma(n))
        for f, n in sys_rows.items()
    ]
    return rows + [
        ("core lines (README table)", "README.md", r"\| core-only lines of code \(`bench/core_loc.py`\) \| ([\d,]+) \|", comma(core)),
        ("core + packet-sys lines (README table)", "README.md", r"\| target 4,500 \| (?:met|missed) \(([\d,]+) with `packet-sys`\) \|", comma(core + sys_)),
        ("core lines (bench/README table)", "bench/README.md", r"\| \*\*total\*\* \| \*\*([\d,]+)\*\* \| \| \| \|", comma(core)),
        ("packet-sys lines (bench/README table)", "bench/README.md", r"\| \*\*total\*\* \| \*\*([\d,]+)\*\* \|\n", comma(sys_)),
        ("core lines (bench/README text)", "bench/README.md", r"The `packet` crate's core is ([\d,]+) lines", comma(core)),
        ("core + packet-sys without process.rs and inotify.rs (bench/README text)", "bench/README.md",
         r"gated behind features of their own the two crates would be ([\d,]+)\.",
         comma(core + sys_ - sys_rows["sys/src/process.rs"] - sys_rows["sys/src/inotify.rs"])),
        ("process.rs and inotify.rs lines (bench/README text)", "bench/README.md",
         r"`inotify.rs` \(([\d,]+) lines\)", comma(sys_rows["sys/src/process.rs"] + sys_rows["sys/src/inotify.rs"])),
        ("core + packet-sys lines (bench/README text)", "bench/README.md", r"\n`packet-sys` ([\d,]+)\. `packet-sys` has no features", comma(core + sys_)),
        (f"Rust the tests need ({who})", "README.md", r"its tests and examples need Rust ([\d.]+) or newer", msrv),
    ]


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode not in ("", "--check", "--update"):
        sys.exit(__doc__)
    bad = 0
    texts = {}
    for label, path, pattern, value in figures():
        text = texts.setdefault(path, read(path))
        found = list(re.finditer(pattern, text))
        if len(found) != 1:
            print(f"MISSING  {label}: {path} should quote it once (pattern {pattern!r}, {len(found)} matches)")
            bad += 1
            continue
        quoted = found[0].group(1)
        status = "ok" if quoted == value else "STALE"
        print(f"{status:8} {label}: {path} says {quoted}, measured {value}")
        if quoted != value:
            bad += 1
            if mode == "--update":
                m = found[0]
                texts[path] = text[: m.start(1)] + value + text[m.end(1):]
    if mode == "--update":
        for path, text in texts.items():
            (ROOT / path).write_text(text)
        return 0
    if bad and mode == "--check":
        print(f"readme_figures: {bad} figure(s) differ; `python3 scripts/readme_figures.py --update` writes the measured ones")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
