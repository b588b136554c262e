#!/usr/bin/env python3
"""Re-points every `file:line` anchor in docs/LIFECYCLE.md at the item the
text names just before it (the last `backticked` name), after code moved.

    python3 docs/refresh_anchors.py      # from the repository root

tests/docs.rs fails when an anchor no longer shows what it names; run this,
read the diff, commit.
"""
import re
import sys

DOC = "docs/LIFECYCLE.md"


def candidates(path, name):
    """Lines of `path` that define or match `name` (last path segment)."""
    last = name.split("::")[-1]
    lines = open(path).read().split("\n")
    defs = [i + 1 for i, l in enumerate(lines)
            if re.search(r"\b(fn|struct|enum|trait|const)\s+" + re.escape(last) + r"\b", l)]
    if defs:
        return defs
    return [i + 1 for i, l in enumerate(lines) if last in l]


def main():
    doc = open(DOC).read()
    out, problems = [], []
    for m in re.finditer(r"(src/[A-Za-z0-9_/]+\.rs):(\d+)", doc):
        path, old = m.group(1), int(m.group(2))
        before = doc[max(0, m.start() - 160):m.start()]
        names = [n for n in re.findall(r"`([^` ]+)`", before)]
        if not names:
            continue
        name = names[-1]
        lines = candidates(path, name)
        if not lines:
            problems.append(f"{m.group(0)}: `{name}` not found in {path}")
            continue
        new = min(lines, key=lambda l: abs(l - old))
        out.append((m.start(), m.end(), f"{path}:{new}"))
    for start, end, text in reversed(out):
        doc = doc[:start] + text + doc[end:]
    open(DOC, "w").write(doc)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{len(out)} anchors checked, {len(problems)} not found")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
