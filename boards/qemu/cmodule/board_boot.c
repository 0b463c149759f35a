// The boot sequence of a real board for the qemu port, whose main.c (MicroPython 1.25
// ports/qemu/main.c) goes straight from mp_init() to the REPL. Like ports/rp2/main.c after
// every mp_init() -- cold boot and each soft reset:
//   1. the frozen _boot.py (boards/qemu/modules: mounts the LittleFS in the second SSRAM at /),
//   2. boot.py from the filesystem, if there is one,
//   3. main.py from the filesystem, if there is one and the REPL is the friendly one (a soft
//      reset from the raw REPL -- mpremote's -- skips main.py, as on rp2).
// It runs from py/runtime.c's MICROPY_PORT_INIT_FUNC hook at the end of mp_init(), so the
// port's main.c is used unmodified. Differences from rp2: a SystemExit / Ctrl-D in boot.py or
// main.py continues to the REPL instead of soft-resetting again.
#include "py/runtime.h"
#include "shared/runtime/pyexec.h"

void edgetune_qemu_boot(void) {
    pyexec_frozen_module("_boot.py", false);
    int ret = pyexec_file_if_exists("boot.py");
    if (!(ret & PYEXEC_FORCED_EXIT) && pyexec_mode_kind == PYEXEC_MODE_FRIENDLY_REPL && ret != 0) {
        pyexec_file_if_exists("main.py");
    }
}
