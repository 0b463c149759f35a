/*
 * Bare-metal start, window vectors and windowed-ABI setjmp/longjmp for the qemu-xtensa board
 * (qemu-system-xtensa -M sim -cpu de233_fpu: 128 MiB RAM at 0, ROM at 0xfe000000 where the CPU
 * starts). Assembled by scripts/xtensa/xtensawin-gcc (clang-22 -E, llvm-mc-22).
 */

#define PS_WOE  0x40000     /* window overflow exceptions on */
#define PS_UM   0x20        /* user vector mode */
#define SYS_exit 1
/* SIMCALL (QEMU semihosting); llvm-mc 22 does not know the mnemonic: its encoding 0x005100. */
#define SIMCALL .byte 0x00, 0x51, 0x00

/* ---- Reset: the sim machine starts at 0xfe000000. */
    .section .ResetVector.text, "ax"
    .global _ResetVector
_ResetVector:
    j       1f
    .balign 4
2:  .4byte  _start
1:  l32r    a2, 2b
    jx      a2

/* ---- Vectors: VECBASE is set to _vector_table by _start. */
    .section .vectors.text, "ax"
    .balign 1024
    .global _vector_table
_vector_table:
    /* Window overflow/underflow handlers (Xtensa ISA, the standard sequences). */
    .org    0x00
_WindowOverflow4:
    s32e    a0, a5, -16
    s32e    a1, a5, -12
    s32e    a2, a5, -8
    s32e    a3, a5, -4
    rfwo
    .org    0x40
_WindowUnderflow4:
    l32e    a0, a5, -16
    l32e    a1, a5, -12
    l32e    a2, a5, -8
    l32e    a3, a5, -4
    rfwu
    .org    0x80
_WindowOverflow8:
    s32e    a0, a9, -16
    l32e    a0, a1, -12
    s32e    a2, a9, -8
    s32e    a1, a9, -12
    s32e    a3, a9, -4
    s32e    a4, a0, -32
    s32e    a5, a0, -28
    s32e    a6, a0, -24
    s32e    a7, a0, -20
    rfwo
    .org    0xc0
_WindowUnderflow8:
    l32e    a1, a9, -12
    l32e    a0, a9, -16
    l32e    a7, a1, -12
    l32e    a2, a9, -8
    l32e    a4, a7, -32
    l32e    a3, a9, -4
    l32e    a5, a7, -28
    l32e    a6, a7, -24
    l32e    a7, a7, -20
    rfwu
    .org    0x100
_WindowOverflow12:
    s32e    a0, a13, -16
    l32e    a0, a1, -12
    s32e    a1, a13, -12
    s32e    a2, a13, -8
    s32e    a3, a13, -4
    s32e    a4, a0, -48
    s32e    a5, a0, -44
    s32e    a6, a0, -40
    s32e    a7, a0, -36
    s32e    a8, a0, -32
    s32e    a9, a0, -28
    s32e    a10, a0, -24
    s32e    a11, a0, -20
    rfwo
    .org    0x140
_WindowUnderflow12:
    l32e    a1, a13, -12
    l32e    a0, a13, -16
    l32e    a11, a1, -12
    l32e    a2, a13, -8
    l32e    a4, a11, -48
    l32e    a8, a11, -32
    l32e    a3, a13, -4
    l32e    a5, a11, -44
    l32e    a6, a11, -40
    l32e    a7, a11, -36
    l32e    a9, a11, -28
    l32e    a10, a11, -24
    l32e    a11, a11, -20
    rfwu
    /* Every other vector (interrupt levels, kernel/user/double exception): nothing is
     * expected; exit qemu with status 100 + (offset / 64) (qemu -d int shows the cause). */
    .macro  fatal_vector off
    .org    \off
    movi    a2, SYS_exit
    movi    a3, 100 + \off / 64
    SIMCALL
9:  j       9b
    .endm
    fatal_vector 0x180
    fatal_vector 0x1c0
    fatal_vector 0x200
    fatal_vector 0x240
    fatal_vector 0x280
    fatal_vector 0x2c0
    fatal_vector 0x300
    fatal_vector 0x340
    fatal_vector 0x380
    fatal_vector 0x3c0

/* ---- _start: windows, vectors, stack, then board_main() (never returns). */
    .section .text.start, "ax"
    .literal_position
    .literal .Lvecbase, _vector_table
    .literal .Lstack, _stack_top
    .literal .Lps, PS_WOE | PS_UM
    .literal .Lmain, board_main
    .global _start
    .balign 4
_start:
    movi    a0, 0
    wsr     a0, windowbase
    rsync
    movi    a0, 1
    wsr     a0, windowstart
    rsync
    l32r    a0, .Lvecbase
    wsr     a0, vecbase
    movi    a0, 1               /* coprocessor 0 = the FPU: off at reset, every FP op traps */
    wsr     a0, cpenable
    rsync
    l32r    a1, .Lstack
    l32r    a0, .Lps
    wsr     a0, ps
    rsync
    movi    a0, 0
    l32r    a4, .Lmain
    /* call4: _start's frame is then spilled by the 4-register overflow handler, which stores
     * only below board_main's stack pointer (a call8 frame would also read its caller's sp). */
    callx4  a4
3:  j       3b

/* ---- Spill every register window older than the caller's to the stack save areas: three
 * nested call12 frames, each touching a15, reach all 8 quads of the 32-register file (window
 * overflow exceptions write the older frames out; they come back by underflow on return).
 * Call it with call4 (or callx8 from C): it needs its caller's base save area only. */
    .section .text.setjmp, "ax"
    .balign 4
    .global board_spill_windows
board_spill_windows:
.Lspill0:
    entry   a1, 48
    call12  .Lspill1
    retw
    .balign 4
.Lspill1:
    entry   a1, 48
    mov     a15, a15
    call12  .Lspill2
    retw
    .balign 4
.Lspill2:
    entry   a1, 48
    mov     a15, a15
    call12  .Lspill3
    retw
    .balign 4
.Lspill3:
    entry   a1, 48
    mov     a15, a15
    retw

/*
 * int setjmp(jmp_buf env) / void longjmp(jmp_buf env, int val), windowed ABI.
 * jmp_buf (17 words): [0..3] the save area below setjmp's sp (the caller's a0..a3),
 * [4..11] the caller's a4..a11 from its extra save area (call8/call12 frames), [12..15] the
 * save area at the caller's sp, [16] the return address with its window-size bits.
 * After the spill the caller's registers are all in memory; longjmp discards every live
 * window but its own and returns into setjmp's caller through a window underflow.
 */
    .section .text.setjmp, "ax"
    .balign 4
    .global setjmp
    .type   setjmp, @function
setjmp:
    /* entry 16 and only call4: setjmp's sp is then its caller's sp - 16, the caller's a0..a3
     * are in the 16 bytes below setjmp's sp, and setjmp has no extra save area of its own. */
    entry   a1, 16
    call4   .Lspill0          /* local label: resolved here, no relocation */
    addi    a5, a1, -16         /* setjmp's base save area: the caller's a0..a3 */
    l32i    a3, a5, 0
    l32i    a4, a5, 4
    s32i    a3, a2, 0
    s32i    a4, a2, 4
    l32i    a3, a5, 8
    l32i    a4, a5, 12
    s32i    a3, a2, 8
    s32i    a4, a2, 12
    extui   a3, a0, 30, 2       /* caller's window: 1 = 4, 2 = 8, 3 = 12 registers */
    blti    a3, 2, .Lsj_end
    l32i    a7, a1, 4           /* the caller's caller's sp: the caller's a4.. lie below it */
    slli    a4, a3, 4
    sub     a5, a7, a4          /* from (that sp - 16 * calln) up to (that sp - 16) */
    addi    a6, a2, 16
    addi    a7, a7, -16
.Lsj_loop:
    l32i    a3, a5, 0
    l32i    a4, a5, 4
    s32i    a3, a6, 0
    s32i    a4, a6, 4
    l32i    a3, a5, 8
    l32i    a4, a5, 12
    s32i    a3, a6, 8
    s32i    a4, a6, 12
    addi    a5, a5, 16
    addi    a6, a6, 16
    blt     a5, a7, .Lsj_loop
.Lsj_end:
    l32i    a3, a1, 0           /* the save area at setjmp's sp (the caller's caller's a0..a3) */
    l32i    a4, a1, 4
    s32i    a3, a2, 48
    s32i    a4, a2, 52
    l32i    a3, a1, 8
    l32i    a4, a1, 12
    s32i    a3, a2, 56
    s32i    a4, a2, 60
    s32i    a0, a2, 64
    movi    a2, 0
    retw
    .size   setjmp, . - setjmp

    .balign 4
    .global longjmp
    .type   longjmp, @function
longjmp:
    entry   a1, 16
    rsr     a5, windowbase      /* WINDOWSTART = 1 << WINDOWBASE: only this frame is live */
    movi    a4, 1
    ssl     a5
    sll     a4, a4
    wsr     a4, windowstart
    rsync
    l32i    a0, a2, 64          /* return as setjmp would have, same window size */
    addi    a7, a1, -16         /* the caller's a0..a3 come back from our base save area */
    l32i    a4, a2, 0
    l32i    a5, a2, 4
    s32i    a4, a7, 0
    s32i    a5, a7, 4
    l32i    a4, a2, 8
    l32i    a5, a2, 12
    s32i    a4, a7, 8
    s32i    a5, a7, 12
    extui   a7, a0, 30, 2
    blti    a7, 2, .Llj_end
    l32i    a8, a2, 52          /* the caller's caller's sp (word 1 of the save area at its sp) */
    slli    a4, a7, 4
    sub     a6, a8, a4
    addi    a5, a2, 16
    addi    a8, a8, -16
.Llj_loop:
    l32i    a7, a5, 0
    l32i    a4, a5, 4
    s32i    a7, a6, 0
    s32i    a4, a6, 4
    l32i    a7, a5, 8
    l32i    a4, a5, 12
    s32i    a7, a6, 8
    s32i    a4, a6, 12
    addi    a5, a5, 16
    addi    a6, a6, 16
    blt     a6, a8, .Llj_loop
.Llj_end:
    l32i    a7, a2, 4           /* the caller's sp: restore the save area at it */
    addi    a7, a7, -16
    l32i    a4, a2, 48
    l32i    a5, a2, 52
    s32i    a4, a7, 0
    s32i    a5, a7, 4
    l32i    a4, a2, 56
    l32i    a5, a2, 60
    s32i    a4, a7, 8
    s32i    a5, a7, 12
    movi    a2, 1
    movnez  a2, a3, a3
    retw
    .size   longjmp, . - longjmp

/* ---- int board_simcall(int nr, int a, int b, int c): QEMU's Xtensa semihosting call (the
 * arguments already sit in a2..a5 where SIMCALL reads them; the result comes back in a2). */
    .section .text.setjmp, "ax"
    .balign 4
    .global board_simcall
    .type   board_simcall, @function
board_simcall:
    entry   a1, 16
    SIMCALL
    retw
    .size   board_simcall, . - board_simcall
