"""The members of a static library (libgcc.a) that a set of object files needs, extracted as
object files for tools/mpy_ld.py (whose own .a support needs a Python package we do not ship).

    python libgcc_objs.py --nm NM --ar AR --lib libgcc.a --out DIR OBJ...

prints the extracted members' paths, one per line: for every symbol still undefined, the member
that defines it, transitively (as a linker would), each member once.
"""

import argparse
import os
import subprocess
import sys


def _nm(nm, paths):
    """{path: (defined, undefined)} global symbols of each object file (or archive member)."""
    out = subprocess.run([nm, "-A", "-g", *paths], check=True, capture_output=True, text=True).stdout
    syms = {}
    for line in out.splitlines():
        where, _, rest = line.rpartition(":")
        # "lib.a:member.o:  U sym" / "obj.o:0000 T sym"
        parts = rest.split()
        if len(parts) < 2:
            continue
        kind, name = parts[-2], parts[-1]
        d, u = syms.setdefault(where, (set(), set()))
        (u if kind == "U" else d).add(name)
    return syms


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nm", required=True)
    ap.add_argument("--ar", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("objs", nargs="+")
    a = ap.parse_args(argv)

    own = _nm(a.nm, a.objs)
    defined = set().union(*(d for d, _ in own.values()))
    undefined = set().union(*(u for _, u in own.values())) - defined
    members = {}  # member name -> (defined, undefined)
    for where, du in _nm(a.nm, [a.lib]).items():
        members[where.rpartition(":")[2]] = du
    provider = {}
    for m, (d, _) in sorted(members.items()):
        for s in d:
            provider.setdefault(s, m)

    chosen = []
    todo = sorted(undefined)
    while todo:
        s = todo.pop()
        if s in defined or s not in provider:
            continue  # resolved by mpy_ld (mp_fun_table, ...) or reported by it
        m = provider[s]
        if m in chosen:
            continue
        chosen.append(m)
        d, u = members[m]
        defined |= d
        todo.extend(sorted(u - defined))

    os.makedirs(a.out, exist_ok=True)
    if chosen:
        subprocess.run([a.ar, "x", os.path.abspath(a.lib), *chosen], check=True, cwd=a.out)
    for m in chosen:
        print(os.path.join(a.out, m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
