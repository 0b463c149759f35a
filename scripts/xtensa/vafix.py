"""Repair LLVM 22's va_start for the Xtensa windowed ABI in an assembly file from clang -S.

    python vafix.py file.s          (rewrites file.s in place; prints nothing)

The va_list is GCC's {__va_stk, __va_reg, __va_ndx}: va_arg reads register arguments at
__va_reg + __va_ndx - size and, once __va_ndx passes 24 (six argument words a2..a7), stack
arguments at __va_stk + __va_ndx - size. LLVM 22 gets two things wrong in va_start:

1. __va_reg points at the save slot of the first *unnamed* register argument, while __va_ndx
   starts at the size of the named ones (4 per register), so every va_arg reads one register
   per named argument too far (mp_printf(print, fmt, x) would read a6 for x instead of a4).
   Fix: __va_reg = that slot - __va_ndx, i.e. the `addi aY, a1, SLOT` that forms it becomes
   `addi aY, a1, SLOT - NDX`.
2. Its va_arg moves __va_ndx to 40 + size at the first stack argument (GCC: 32 + size) while
   __va_stk is the caller's sp - 32, so stack arguments are read 8 bytes too high (callers,
   LLVM's included, put them at their sp + 0). Fix: __va_stk = the caller's sp - 40, i.e. the
   `addi aX, aX, -32` after `addi aX, a1, FRAME` becomes -40. (Only va_lists made by this
   va_start are read by LLVM's va_arg in code built this way.)

A function is taken as variadic when, before its first branch, call or label, it stores a7 and
the argument registers below it to consecutive stack slots (the register save area) and forms
the caller's sp - 32 (__va_stk). If it then does not form the save area's address (__va_reg),
the script fails rather than let a miscompiled function through.
"""

from __future__ import annotations

import re
import sys

S32I = re.compile(r"^\s*s32i\s+a([2-7]),\s*a1,\s*(\d+)\s*$")
ADDI = re.compile(r"^(\s*addi\s+)(a\d+)(,\s*a1,\s*)(-?\d+)(\s*)$")
ADDI_SELF = re.compile(r"^(\s*addi\s+)(a\d+)(,\s*)(a\d+)(,\s*)-32(\s*)$")
ENTRY = re.compile(r"^\s*entry\s+a1,\s*(\d+)\s*$")
FUNC_START = re.compile(r"^([A-Za-z_.$][\w.$]*):")
FUNC_END = re.compile(r"^\.Lfunc_end\d+:")


class VaFixError(Exception):
    pass


def _fix_function(lines: list[str], name: str) -> int:
    """Fix one function's lines in place; return 1 if it was variadic, else 0."""
    frame = None
    saved: dict[int, int] = {}
    for line in lines:
        code = line.split("#", 1)[0]
        m = ENTRY.match(code)
        if m:
            frame = int(m.group(1))
            continue
        if re.match(r"^\s*(call|callx|j|b[a-z]*|ret|retw)\b", code) or re.match(r"^\.?L\w+:", code.strip()):
            break
        m = S32I.match(code)
        if m and int(m.group(1)) not in saved:
            saved[int(m.group(1))] = int(m.group(2))
    if 7 not in saved or frame is None:
        return 0
    k = 7
    while k - 1 in saved and saved[k - 1] == saved[k] - 4:
        k -= 1
    ndx = 4 * (k - 2)
    slot = saved[k]
    # va_start's unmistakable part: __va_stk = the caller's sp - 32 (a1 + FRAME - 32).
    stk_lines = []
    for i, line in enumerate(lines[:-1]):
        m = ADDI.match(line.split("#", 1)[0])
        if m and int(m.group(4)) == frame:
            nxt = ADDI_SELF.match(lines[i + 1].split("#", 1)[0])
            if nxt and nxt.group(2) == m.group(2) and nxt.group(4) == m.group(2):
                stk_lines.append((i + 1, nxt))
    if not stk_lines:
        return 0  # a7 stored for another reason: no va_start here
    for i, nxt in stk_lines:
        lines[i] = f"{nxt.group(1)}{nxt.group(2)}{nxt.group(3)}{nxt.group(4)}{nxt.group(5)}-40\n"
    fixed_reg = 0
    for i, line in enumerate(lines):
        m = ADDI.match(line.split("#", 1)[0])
        if m and int(m.group(4)) == slot and ndx > 0:
            lines[i] = f"{m.group(1)}{m.group(2)}{m.group(3)}{slot - ndx}\n"
            fixed_reg += 1
    if ndx > 0 and fixed_reg == 0:
        raise VaFixError(
            f"{name}: variadic function with an unexpected va_start sequence "
            f"(save area at a1+{slot}, index {ndx}); refusing to build it (LLVM 22 miscompiles va_start)"
        )
    return 1


def fix_text(text: str) -> tuple[str, int]:
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    func: list[str] | None = None
    name = ""
    count = 0
    for line in lines:
        if func is None:
            m = FUNC_START.match(line)
            if m and not line.startswith(".L"):
                func = [line]
                name = m.group(1)
            else:
                out.append(line)
            continue
        func.append(line)
        if FUNC_END.match(line):
            count += _fix_function(func, name)
            out.extend(func)
            func = None
    if func is not None:
        count += _fix_function(func, name)
        out.extend(func)
    return "".join(out), count


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: vafix.py file.s", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        text = f.read()
    try:
        new, _ = fix_text(text)
    except VaFixError as e:
        print(f"vafix: {argv[1]}: {e}", file=sys.stderr)
        return 1
    if new != text:
        with open(argv[1], "w") as f:
            f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
