"""Freeze an exported .etm model into MicroPython firmware as a 4-byte-aligned bytes object.

`edgetune freeze MODEL.etm -o et_model.py` writes a Python module holding the model as ONE
bytes constant (``MODEL``), plus its size and CRC. Frozen into the firmware (a manifest's
``freeze()``), the bytes live in flash and ``edgetune.Model(et_model.MODEL)`` reads the
weights in place, without a copy in RAM.

Alignment. The C module requires a 4-byte-aligned model buffer (native_modules/edgetune/model.c
refuses others). MicroPython's mpy-tool.py emits a frozen bytes constant as
``static const mp_obj_str_t const_obj_... = {{&mp_type_bytes}, hash, len, (const byte*)"\\x.."};``
: the data is an anonymous string literal, and C gives string literals byte alignment. Whether
it ends up word-aligned depends on the compiler: arm-none-eabi-gcc aligns string constants to 4
only when not optimizing for size (at -Os it packs them at any
byte offset; checked with objdump: ``.rodata`` alignment 2**0 at -Os, 2**2 at -O2; the qemu
port builds with -Os), xtensa gcc aligns them to 4. So the generator cannot rely on it.

`align_frozen_content(path)` fixes it after mpy-tool ran: it rewrites each bytes constant of
the frozen model module in frozen_content.c to point at a named
``static const byte ..._data[] __attribute__((aligned(4)))`` array with the same bytes (same
hash, same length; nothing else in the file changes). scripts/firmware_qemu.sh runs it between
generating frozen_content.c and compiling it; `elf_offset_of()` finds the model's bytes in the
linked ELF so a build can verify the address (the script prints it and fails if it is not a
multiple of 4).
"""

from __future__ import annotations

import argparse
import re
import struct
import sys
from pathlib import Path

DEFAULT_MODULE = "et_model"
_LINE = 76  # hex-escaped bytes per source line of the generated module


def module_source(etm: bytes, name: str = "") -> str:
    """The text of the frozen model module for the .etm bytes `etm`."""
    if len(etm) < 16 or etm[:4] != b"EDTM":
        raise ValueError("not an .etm model file (magic EDTM missing)")
    crc = struct.unpack_from("<I", etm, 12)[0]
    out = [
        f'"""The edgetune model {name or "(frozen)"} frozen into the firmware (host/edgetune/device/freeze.py).',
        "",
        "edgetune.Model(MODEL) reads it in place from flash; the firmware build aligns it to 4 bytes.",
        '"""',
        "",
        f"SIZE = {len(etm)}",
        f"CRC = 0x{crc:08x}  # payload CRC32 from the .etm header",
        f"NAME = {name!r}",
        "MODEL = (",
    ]
    step = _LINE // 4
    for i in range(0, len(etm), step):
        out.append('    b"' + "".join(f"\\x{b:02x}" for b in etm[i:i + step]) + '"')
    out.append(")")
    return "\n".join(out) + "\n"


def write_module(etm_path: str | Path, out_path: str | Path, name: str | None = None) -> Path:
    """Write the frozen model module for the .etm file at `etm_path`; returns `out_path`.

    The file is only rewritten when its text changes (keeps the firmware build incremental).
    """
    etm = Path(etm_path).read_bytes()
    text = module_source(etm, name if name is not None else Path(etm_path).name)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file() or out.read_text() != text:
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return out


_BYTES_CONST = re.compile(
    r'static const mp_obj_str_t (?P<name>const_obj_(?P<rest>\w+)) = '
    r'\{\{&mp_type_bytes\}, (?P<hash>\d+), (?P<len>\d+), \(const byte\*\)"(?P<data>(?:\\x[0-9a-f]{2})*)"\};'
)


def align_c_text(text: str, module: str = DEFAULT_MODULE) -> tuple[str, int]:
    """Rewrite the bytes constants of frozen module `module` in frozen_content.c text so their
    data is a 4-byte-aligned array. Returns (new text, number of constants rewritten).
    Idempotent: an already rewritten file has no matching constants left."""
    mod = re.sub(r"\W", "_", module)
    count = 0

    def repl(m: re.Match) -> str:
        nonlocal count
        if not m.group("rest").startswith(mod + "_"):
            return m.group(0)
        count += 1
        n = int(m.group("len"))
        name = m.group("name")
        return (
            f'static const byte {name}_data[{n + 1}] __attribute__((aligned(4))) = "{m.group("data")}";\n'
            f"static const mp_obj_str_t {name} = {{{{&mp_type_bytes}}, {m.group('hash')}, {n}, {name}_data}};"
        )

    return _BYTES_CONST.sub(repl, text), count


def align_frozen_content(path: str | Path, module: str = DEFAULT_MODULE) -> int:
    """Patch frozen_content.c at `path` in place (see align_c_text); returns the count."""
    p = Path(path)
    text, n = align_c_text(p.read_text(), module)
    if n:
        p.write_text(text)
    return n


def elf_offset_of(elf_path: str | Path, blob: bytes) -> int | None:
    """Virtual address of the first copy of `blob` in a loaded section of the ELF32 file, or None."""
    data = Path(elf_path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1:
        raise ValueError(f"{elf_path}: not a 32-bit ELF file")
    endian = "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(endian + "I", data, 28)
    phentsize, phnum = struct.unpack_from(endian + "HH", data, 42)
    for k in range(phnum):
        p_type, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(endian + "5I", data, phoff + k * phentsize)
        if p_type != 1:  # PT_LOAD
            continue
        at = data.find(blob, p_offset, p_offset + p_filesz)
        if at >= 0:
            return p_vaddr + (at - p_offset)
    return None


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="edgetune freeze", description="write a frozen-module .py holding an .etm model (4-byte aligned in firmware)"
    )
    parser.add_argument("model", type=Path, nargs="?", help="the .etm model file")
    parser.add_argument("-o", "--output", type=Path, help="module to write (default: et_model.py)")
    parser.add_argument("--align-c", type=Path, metavar="FROZEN_CONTENT_C",
                        help="instead: align the model's bytes in a generated frozen_content.c")
    parser.add_argument("--module", default=DEFAULT_MODULE, help=f"frozen module name (default {DEFAULT_MODULE})")
    parser.add_argument("--check-elf", type=Path, metavar="ELF",
                        help="instead: print the model's address in a linked ELF; exit 1 if absent or unaligned")
    args = parser.parse_args(argv)
    if args.align_c:
        try:
            n = align_frozen_content(args.align_c, args.module)
        except OSError as e:
            print(f"edgetune freeze: {e}", file=sys.stderr)
            return 2
        print(f"edgetune freeze: aligned {n} bytes constant(s) of {args.module} in {args.align_c}")
        return 0
    if args.model is None:
        parser.error("a model .etm is required")
    if not args.model.is_file():
        print(f"edgetune freeze: no such model file: {args.model}", file=sys.stderr)
        return 2
    if args.check_elf:
        addr = elf_offset_of(args.check_elf, args.model.read_bytes())
        if addr is None:
            print(f"edgetune freeze: {args.model} is not in {args.check_elf}", file=sys.stderr)
            return 1
        ok = addr % 4 == 0
        print(f"edgetune freeze: model at 0x{addr:08x} ({'4-byte aligned' if ok else 'NOT 4-byte aligned'})")
        return 0 if ok else 1
    try:
        out = write_module(args.model, args.output or Path(f"{args.module}.py"))
    except ValueError as e:
        print(f"edgetune freeze: {args.model}: {e}", file=sys.stderr)
        return 2
    print(f"edgetune freeze: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
