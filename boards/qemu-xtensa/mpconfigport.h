// MicroPython configuration of the qemu-xtensa board: MicroPython 1.25's core built with
// upstream LLVM for the Xtensa windowed ABI (scripts/xtensa/xtensawin-gcc), running on
// qemu-system-xtensa -M sim -cpu de233_fpu. It exists to load and test xtensawin native
// modules (.mpy) built by the same compiler; docs/xtensa.md.
#include <stdint.h>
#include <alloca.h>

#define MICROPY_CONFIG_ROM_LEVEL            (MICROPY_CONFIG_ROM_LEVEL_CORE_FEATURES)

#define MICROPY_HW_BOARD_NAME               "qemu-xtensa"
#define MICROPY_HW_MCU_NAME                 "Xtensa LX7 (qemu de233_fpu)"
#define MICROPY_PY_SYS_PLATFORM             "qemu-xtensa"

// Non-local return through the board's windowed-ABI setjmp/longjmp (startup.S); py/nlrxtensa.c
// is for the call0 ABI (ESP8266).
#define MICROPY_NLR_SETJMP                  (1)
#define MICROPY_GCREGS_SETJMP               (0)

// Native modules for the ESP32's ABI: the .mpy header says xtensawin.
#define MICROPY_EMIT_XTENSAWIN              (1)
#define MICROPY_PERSISTENT_CODE_LOAD        (1)

#define MICROPY_ENABLE_GC                   (1)
#define MICROPY_ENABLE_FINALISER            (1)
#define MICROPY_HELPER_REPL                 (1)
#define MICROPY_REPL_AUTO_INDENT            (1)
#define MICROPY_ENABLE_EXTERNAL_IMPORT      (1)
#define MICROPY_LONGINT_IMPL                (MICROPY_LONGINT_IMPL_MPZ)
#define MICROPY_FLOAT_IMPL                  (MICROPY_FLOAT_IMPL_FLOAT)
#define MICROPY_ERROR_REPORTING             (MICROPY_ERROR_REPORTING_NORMAL)
#define MICROPY_WARNINGS                    (1)
#define MICROPY_ENABLE_SOURCE_LINE          (1)
#define MICROPY_STACK_CHECK                 (1)
#define MICROPY_KBD_EXCEPTION               (1)
#define MICROPY_READER_VFS                  (1)
#define MICROPY_VFS                         (1)
#define MICROPY_PY_OS                       (1)
#define MICROPY_PY_IO                       (1)
#define MICROPY_PY_SYS                      (1)
#define MICROPY_PY_SYS_MODULES              (1)
#define MICROPY_PY_SYS_EXIT                 (1)
#define MICROPY_PY_SYS_STDFILES             (1)
#define MICROPY_PY_SYS_STDIO_BUFFER         (1)
#define MICROPY_PY_ARRAY                    (1)
#define MICROPY_PY_ARRAY_SLICE_ASSIGN       (1)
#define MICROPY_PY_STRUCT                   (1)
#define MICROPY_PY_COLLECTIONS              (1)
#define MICROPY_PY_GC                       (1)
#define MICROPY_PY_MICROPYTHON              (1)
#define MICROPY_PY_MICROPYTHON_MEM_INFO     (1)
#define MICROPY_PY_UCTYPES                  (1)
// No math module: lib/libm's asinfacosf.c, nearbyintf.c and sf_erf.c crash LLVM 22 (a select
// between two float constants); the core's own float code needs only the libm pieces below.
#define MICROPY_PY_MATH                     (0)
#define MICROPY_PY_CMATH                    (0)
// py/objcomplex.c crashes LLVM 22's Xtensa backend (instruction selection).
#define MICROPY_PY_BUILTINS_COMPLEX         (0)
#define MICROPY_PY_BUILTINS_BYTEARRAY       (1)
#define MICROPY_PY_BUILTINS_MEMORYVIEW      (1)
#define MICROPY_PY_BUILTINS_SLICE_ATTRS     (1)
#define MICROPY_PY_BUILTINS_HELP            (0)
#define MICROPY_PY_BUILTINS_INPUT           (1)
#define MICROPY_PY_BUILTINS_ROUND_INT       (1)
#define MICROPY_PY_ALL_SPECIAL_METHODS      (1)
#define MICROPY_PY_BINASCII                 (1)
#define MICROPY_PY_BUILTINS_BYTES_HEX       (1)
#define MICROPY_PY_ERRNO                    (1)
#define MICROPY_PY_RANDOM                   (0)
#define MICROPY_PY_TIME                     (0)
#define MICROPY_PY_SELECT                   (0)
#define MICROPY_PY_MACHINE                  (0)
#define MICROPY_ALLOC_PATH_MAX              (256)
#define MICROPY_USE_INTERNAL_ERRNO          (1)
#define MICROPY_USE_INTERNAL_PRINTF         (0)

#ifndef MICROPY_HEAP_SIZE
#define MICROPY_HEAP_SIZE                   (256 * 1024)
#endif

// FAT on a RAM disk (main.c). LittleFS looped forever in lfs2_dir_orphaningcommit here after a
// few dozen file writes and removals, so the board uses FAT.
#define MICROPY_FATFS_ENABLE_LFN            (1)
#define MICROPY_FATFS_RPATH                 (2)
#define MICROPY_FATFS_MAX_SS                (512)
#define MICROPY_FATFS_LFN_CODE_PAGE         437

typedef int32_t mp_int_t;
typedef uint32_t mp_uint_t;
typedef long mp_off_t;

#define MP_STATE_PORT                       MP_STATE_VM
#define MICROPY_PY_SYS_PATH_DEFAULT         ":/lib"
