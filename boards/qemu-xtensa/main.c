// The qemu-xtensa board: MicroPython's core on qemu-system-xtensa -M sim -cpu de233_fpu.
// Console: QEMU semihosting (SYS_read/SYS_write on fds 0/1; -semihosting-config chardev= puts it
// on a pty or stdio). Filesystem: FAT at / on RAM outside the image (zero when QEMU starts, so
// formatted at the first boot; kept across soft resets). Start: startup.S (_start -> board_main).
#include <string.h>

#include "py/builtin.h"
#include "py/compile.h"
#include "py/gc.h"
#include "py/mperrno.h"
#include "py/mphal.h"
#include "py/runtime.h"
#include "py/stackctrl.h"
#include "shared/runtime/pyexec.h"

#define SYS_exit 1
#define SYS_read 3
#define SYS_write 4
#define SYS_select_one 29
#define SELECT_ONE_READ 1

int board_simcall(int nr, int a, int b, int c);
void board_spill_windows(void);

extern char _bss_start[], _bss_end[], _stack_top[], _stack_bottom[];

// The filesystem's RAM: 8 MiB at 64 MiB (the image and its stack end below 2 MiB).
#define BOARD_FS_ADDR 0x04000000u
#define BOARD_FS_SIZE (8u * 1024u * 1024u)

static uint32_t gc_heap[MICROPY_HEAP_SIZE / sizeof(uint32_t)];

static NORETURN void board_exit(int status) {
    board_simcall(SYS_exit, status, 0, 0);
    for (;;) {
    }
}

int mp_hal_stdin_rx_chr(void) {
    unsigned char c;
    for (;;) {
        int n = board_simcall(SYS_read, 0, (int)(uintptr_t)&c, 1);
        if (n == 1) {
            return c;
        }
        if (n == 0) {
            // End of input (the console's stdin was closed): the board's user is gone.
            board_exit(0);
        }
        // Nothing to read yet (QEMU's console read does not block): sleep in SYS_select_one
        // (no timeout) until a byte arrives, so an idle board costs no host CPU.
        board_simcall(SYS_select_one, 0, SELECT_ONE_READ, 0);
    }
}

mp_uint_t mp_hal_stdout_tx_strn(const char *str, size_t len) {
    size_t done = 0;
    while (done < len) {
        // SYS_write returns the number of bytes *not* written.
        int left = board_simcall(SYS_write, 1, (int)(uintptr_t)(str + done), (int)(len - done));
        if (left < 0 || (size_t)left >= len - done) {
            break;
        }
        done = len - (size_t)left;
    }
    return done;
}

// Mounts the RAM filesystem (formatting it on first use) and adds /lib to the path; run after
// every mp_init(). The block device is a memoryview on the fixed RAM region.
static const char board_boot_py[] =
    "import vfs, uctypes\n"
    "class _RamBlocks:\n"
    "    def __init__(s, a, n, bs):\n"
    "        s.m = memoryview(uctypes.bytearray_at(a, n)); s.bs = bs; s.n = n // bs\n"
    "    def readblocks(s, b, buf, off=0):\n"
    "        o = b * s.bs + off; buf[:] = s.m[o:o + len(buf)]\n"
    "    def writeblocks(s, b, buf, off=0):\n"
    "        o = b * s.bs + off; s.m[o:o + len(buf)] = buf\n"
    "    def ioctl(s, op, arg):\n"
    "        if op == 4: return s.n\n"
    "        if op == 5: return s.bs\n"
    "        if op == 6: return 0\n"
    "def _mount(a, n):\n"
    "    bd = _RamBlocks(a, n, 512)\n"
    "    try:\n"
    "        vfs.mount(vfs.VfsFat(bd), '/')\n"
    "    except OSError:\n"
    "        vfs.VfsFat.mkfs(bd); vfs.mount(vfs.VfsFat(bd), '/')\n"
    "_mount(0x04000000, 0x800000)\n"
    "del _mount, _RamBlocks\n";

static void board_boot(void) {
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        mp_lexer_t *lex = mp_lexer_new_from_str_len(MP_QSTR__boot_dot_py, board_boot_py, sizeof(board_boot_py) - 1, 0);
        qstr source_name = lex->source_name;
        mp_parse_tree_t parse_tree = mp_parse(lex, MP_PARSE_FILE_INPUT);
        mp_obj_t module_fun = mp_compile(&parse_tree, source_name, false);
        mp_call_function_0(module_fun);
        nlr_pop();
    } else {
        mp_obj_print_exception(&mp_plat_print, (mp_obj_t)nlr.ret_val);
    }
}

void board_main(void) {
    memset(_bss_start, 0, (size_t)(_bss_end - _bss_start));
    mp_stack_set_top(_stack_top);
    mp_stack_set_limit((mp_uint_t)(_stack_top - _stack_bottom) - 8192);
    gc_init(gc_heap, (char *)gc_heap + sizeof(gc_heap));
    for (;;) {
        mp_init();
        board_boot();
        for (;;) {
            if (pyexec_mode_kind == PYEXEC_MODE_RAW_REPL) {
                if (pyexec_raw_repl() != 0) {
                    break;
                }
            } else {
                if (pyexec_friendly_repl() != 0) {
                    break;
                }
            }
        }
        mp_printf(&mp_plat_print, "MPY: soft reboot\n");
        gc_sweep_all();
        mp_deinit();
    }
}

void gc_collect(void) {
    gc_collect_start();
    // Every caller's register window goes to its stack save area; the scan starts 16 bytes
    // below our sp, where our caller's a0..a3 were just written.
    board_spill_windows();
    uintptr_t sp;
    __asm__ volatile ("mov %0, a1" : "=r" (sp));
    sp -= 16;
    gc_collect_root((void **)sp, ((uintptr_t)_stack_top - sp) / sizeof(uintptr_t));
    gc_collect_end();
}

NORETURN void nlr_jump_fail(void *val) {
    (void)val;
    mp_hal_stdout_tx_strn("FATAL: uncaught NLR\n", 20);
    board_exit(1);
}

void NORETURN __fatal_error(const char *msg) {
    mp_hal_stdout_tx_strn(msg, strlen(msg));
    board_exit(1);
}

#ifndef NDEBUG
void __assert_func(const char *file, int line, const char *func, const char *expr) {
    (void)line;
    (void)func;
    mp_hal_stdout_tx_strn("assertion failed: ", 18);
    mp_hal_stdout_tx_strn(expr, strlen(expr));
    mp_hal_stdout_tx_strn(" in ", 4);
    mp_hal_stdout_tx_strn(file, strlen(file));
    __fatal_error("\n");
}
#endif

// FAT file times: no clock on this board (1980-01-01).
uint32_t get_fattime(void) {
    return (0u << 25) | (1u << 21) | (1u << 16);
}
