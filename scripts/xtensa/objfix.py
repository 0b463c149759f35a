"""Make an Xtensa object file written by llvm-mc-22 look like GNU as output to its consumers
(MicroPython's tools/mpy_ld.py and GNU ld). Used by xtensawin-gcc after every compile.

    python objfix.py in.o out.o

Four fix-ups, all in place (section sizes and layout do not change):

1. L32R fields: llvm-mc leaves 0xffff in the 16-bit offset of every `l32r` it relocates
   (R_XTENSA_SLOT0_OP against a .literal section). GNU as leaves 0 there, and mpy_ld *adds* its
   computed offset to the field, so with 0xffff every literal load would read the word before
   the intended one, silently. The field is set to 0.
2. Literal addends: a literal pointing into a section (`.word .L.str+8`) comes out as
   R_XTENSA_32 against the section symbol with r_addend 8 and 0 in the data. mpy_ld asserts
   r_addend == 0 for section symbols and takes the offset from the data instead, so the
   addend is moved into the data word and r_addend set to 0 (same meaning for a RELA linker).
3. Literal alignment: llvm-mc gives .literal sections alignment 1; a linker that places an
   object's literals right after another object's code (the qemu-xtensa board keeps each
   object's literals next to its code, l32r reaches 256 KiB back only) could then misalign
   them. l32r loads aligned words: sh_addralign is set to 4.
4. Literals naming a static function: llvm-mc writes them as `.text + offset`, and mpy_ld names
   such a GOT entry "<section>+<offset>" and merges equal names across objects, so static
   functions at the same offset in two objects would become one. A literal pointing exactly at
   a local function symbol is re-pointed at that symbol (mpy_ld then names it by the
   function's name, which xtensawin-gcc -mrodata-rw makes unique with the object's name).
"""

from __future__ import annotations

import struct
import sys

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

R_XTENSA_32 = 1
R_XTENSA_SLOT0_OP = 20


def fix(data: bytearray) -> tuple[int, int]:
    """Apply both fix-ups to the object file bytes `data`; return (l32r fields, addends) fixed."""
    import io

    elf = ELFFile(io.BytesIO(bytes(data)))
    if elf["e_machine"] != "EM_XTENSA":
        raise ValueError(f"not an Xtensa object file (e_machine {elf['e_machine']})")
    n_l32r = n_add = 0
    funcs: dict[tuple[int, int], int] = {}  # (section index, offset) -> local function symbol index
    for sym_sec in elf.iter_sections():
        if sym_sec["sh_type"] == "SHT_SYMTAB":
            for k, sym in enumerate(sym_sec.iter_symbols()):
                if (sym["st_info"]["type"] == "STT_FUNC" and sym["st_info"]["bind"] == "STB_LOCAL"
                        and isinstance(sym["st_shndx"], int)):
                    funcs.setdefault((sym["st_shndx"], sym["st_value"]), k)
    func_secs = {k[0] for k in funcs}
    for idx, sec in enumerate(elf.iter_sections()):
        if sec.name.startswith(".literal") and sec["sh_addralign"] < 4:
            struct.pack_into("<I", data, elf["e_shoff"] + idx * elf["e_shentsize"] + 32, 4)
    for rsec in elf.iter_sections():
        if not isinstance(rsec, RelocationSection) or not rsec.is_RELA():
            continue
        target = elf.get_section(rsec["sh_info"])
        symtab = elf.get_section(rsec["sh_link"])
        entsize = rsec["sh_entsize"] or 12
        for i, r in enumerate(rsec.iter_relocations()):
            rtype = r["r_info_type"]
            sym = symtab.get_symbol(r["r_info_sym"])
            shndx = sym["st_shndx"]
            sym_sec = elf.get_section(shndx) if isinstance(shndx, int) and shndx > 0 else None
            if (
                rtype == R_XTENSA_SLOT0_OP
                and sym_sec is not None
                and sym_sec.name.startswith(".literal")
                and target.name.startswith(".text")
            ):
                off = target["sh_offset"] + r["r_offset"]
                if data[off] & 0x0F == 0x01:  # RI16 format: l32r
                    if data[off + 1] or data[off + 2]:
                        data[off + 1] = data[off + 2] = 0
                        n_l32r += 1
            elif (
                rtype == R_XTENSA_32
                and target.name.startswith(".literal")
                and sym["st_info"]["type"] == "STT_SECTION"
                and (r["r_addend"] != 0 or shndx in func_secs)
            ):
                off = target["sh_offset"] + r["r_offset"]
                (word,) = struct.unpack_from("<I", data, off)
                value = (word + r["r_addend"]) & 0xFFFFFFFF
                fn = funcs.get((shndx, value))
                if fn is not None:  # fix-up 4: name the function, not `.text + value`
                    struct.pack_into("<I", data, off, 0)
                    struct.pack_into("<I", data, rsec["sh_offset"] + i * entsize + 4, (fn << 8) | rtype)
                else:
                    struct.pack_into("<I", data, off, value)
                struct.pack_into("<i", data, rsec["sh_offset"] + i * entsize + 8, 0)
                n_add += 1
    return n_l32r, n_add


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: objfix.py in.o out.o", file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        data = bytearray(f.read())
    fix(data)
    with open(argv[2], "wb") as f:
        f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
