"""Give every file-local function in an assembly file from clang -S a name unique to its object:
NAME -> NAME.<stem> (used by xtensawin-gcc -mrodata-rw, i.e. for natmods).

    python localnames.py file.s STEM      (rewrites file.s in place)

mpy_ld names a GOT entry after the symbol a literal points at and merges equal names across
objects, so `static void check(...)` in two objects would become one function. Global symbols
are left alone (they are unique anyway), and so are .L labels.
"""

from __future__ import annotations

import re
import sys


def rename(text: str, stem: str) -> str:
    funcs = set(re.findall(r"^\s*\.type\s+([A-Za-z_][\w.$]*)\s*,\s*@function", text, re.M))
    globs = set(re.findall(r"^\s*\.(?:globl|global|weak)\s+([A-Za-z_][\w.$]*)", text, re.M))
    local = sorted(funcs - globs, key=len, reverse=True)
    if not local:
        return text
    pat = re.compile(r"(?<![\w.$])(" + "|".join(re.escape(n) for n in local) + r")(?![\w$])")
    return pat.sub(lambda m: f"{m.group(1)}.{stem}", text)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: localnames.py file.s STEM", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        text = f.read()
    new = rename(text, argv[2])
    if new != text:
        with open(argv[1], "w") as f:
            f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
