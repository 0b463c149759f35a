# The edgetune user C module for make-based MicroPython ports (unix, qemu, ...).
# Build with: make -C $(MICROPY_DIR)/ports/<port> USER_C_MODULES=<dir that holds edgetune/>
# The same source list is in micropython.cmake (rp2, esp32).

EDGETUNE_MOD_DIR := $(USERMOD_DIR)

# Every C file of the module -- the engine (*.c: .etm parser, forward, training, refit), the
# MicroPython bindings (bindings/*.c) and the plain-C99 kernels (kernels/*.c) -- picked up by
# wildcard so a new file needs no edit here.
EDGETUNE_SRC_C := $(sort $(wildcard $(EDGETUNE_MOD_DIR)/*.c $(EDGETUNE_MOD_DIR)/bindings/*.c $(EDGETUNE_MOD_DIR)/kernels/*.c))

SRC_USERMOD_C += $(EDGETUNE_SRC_C)
CFLAGS_USERMOD += -I$(EDGETUNE_MOD_DIR) -I$(EDGETUNE_MOD_DIR)/kernels

# Arithmetic contract (docs/training.md): no FMA contraction in our sources, so float code
# gives the same bits as the numpy twin on every ISA. Applied per object file (the object
# paths mirror how py/py.mk names user-module objects), not to the rest of MicroPython.
EDGETUNE_OBJ := $(addprefix $(BUILD)/,$(patsubst $(USER_C_MODULES)/%.c,%.o,$(EDGETUNE_SRC_C)))
$(EDGETUNE_OBJ): CFLAGS += -ffp-contract=off

# The kernels' inner loops at -O2 rather than the ports' -Os: at -Os gcc spills the conv loop's
# pointers to the stack (19 guest instructions per MAC on the Cortex-M3 vs 6; bench/mcu.py).
# Costs about 2.5 KB of flash; the arithmetic is integer/IEEE either way (no contraction).
EDGETUNE_KERNEL_OBJ := $(filter $(BUILD)/edgetune/kernels/%,$(EDGETUNE_OBJ))
$(EDGETUNE_KERNEL_OBJ): CFLAGS += -O2
