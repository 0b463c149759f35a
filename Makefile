# edgetune: `make setup` once on a fresh Debian machine, then `make test`.
#
#   make setup                    apt packages, MicroPython source, .venv, unix firmware
#   make test                     rebuild the unix ports (with, without our module) and the .mpy if needed, run pytest
#   make demo                     the story: model -> unix port at the RP2040 heap -> fine-tune -> plot
#   make firmware [BOARD=unix]    build/unix/micropython (MicroPython unix port + our C module)
#   make firmware BOARD=unix-stock  build/unix-stock/micropython (the unix port without our module)
#   make natmod [ARCH="x64 armv6m armv7m armv7emsp"]  build/natmod/<arch>/edgetune.mpy + package.json
#   make natmod ARCH=xtensawin    ESP32-S3 .mpy with upstream LLVM (+ xtensawin-qemu, the test build)
#   make firmware BOARD=rp2040 [MODEL=m.etm]  build/rp2040/firmware.uf2 (Raspberry Pi Pico)
#   make firmware BOARD=qemu [MODEL=m.etm]  build/qemu/firmware.elf (Cortex-M3 MPS2-AN385)
#   make firmware BOARD=qemu-xtensa  build/qemu-xtensa/firmware.elf (Xtensa LX7, LLVM-built core)
#   make firmware BOARD=qemu-stock  build/qemu-stock/firmware.elf (stock: no module, no app)
#   make firmware BOARD=esp32s3 [VARIANT=SPIRAM_OCT] [MODEL=m.etm]  needs ESP-IDF 5.2-5.4 (IDF_PATH)
#   make flash BOARD=esp32s3|rp2040 [PORT=...]  esptool / picotool or the RPI-RP2 drive
#   make flash BOARD=esp32s3 FIRMWARE=stock.bin [MODEL=m.etm]  stock MicroPython + the xtensawin .mpy
#   make bench                    learning, scheme and training benchmarks -> build/bench/*.json
#   make bench-mcu                guest instructions per call/output/MAC under qemu (M3, ARMv6-M, Xtensa LX7) -> build/bench/mcu.json
#   make bench-fleet              fleet learning on Flower (~45 min) -> build/bench/fleet.json
#   make fuzz [FUZZ_RUNS=1000000]  libFuzzer + ASan/UBSan on the C parsers -> build/bench/reliability.json
#   make test-sanitize            the unix-port tests on an ASan+UBSan build of the unix port
#   make clean                    remove our build outputs (keeps downloaded sources and .venv)
#
# MICROPY_DIR=/path uses your own MicroPython checkout instead of build/micropython.

SHELL := /bin/bash
.DEFAULT_GOAL := help

BOARD ?= unix
BOARDS := unix unix-stock rp2040 qemu qemu-stock qemu-xtensa esp32s3
MODEL ?=
# An empty MICROPY_DIR counts as unset.
MICROPY_DIR_GIVEN := $(if $(strip $(MICROPY_DIR)),$(filter command line environment,$(origin MICROPY_DIR)))
ifeq ($(strip $(MICROPY_DIR)),)
override MICROPY_DIR := $(CURDIR)/build/micropython
endif
override MICROPY_DIR := $(abspath $(MICROPY_DIR))
JOBS ?= 2

# MicroPython stamps its banner with `git describe` of the enclosing repo, which for Debian's
# source tarball under build/ is *our* repo (wrong, and every commit would rebuild). Without a
# MicroPython git checkout, use the version from py/mpconfig.h instead.
ifeq ($(wildcard $(MICROPY_DIR)/.git),)
export MICROPY_GIT_TAG := v$(shell awk '/^\#define MICROPY_VERSION_(MAJOR|MINOR|MICRO) / { v = v (v == "" ? "" : ".") $$3 } END { print v }' $(MICROPY_DIR)/py/mpconfig.h 2>/dev/null)
export MICROPY_GIT_HASH := debian-source
endif
PYTHON := $(CURDIR)/.venv/bin/python
PYTEST_ARGS ?=

# The unix port with our module; everything optional that needs absent lib/ submodules or
# system libraries is switched off, and nothing is frozen (so no mpy-cross is needed).
UNIX_BUILD := $(CURDIR)/build/unix
UNIX_MAKE_ARGS := VARIANT=standard MICROPY_PY_BTREE=0 MICROPY_PY_SSL=0 MICROPY_PY_FFI=0 \
	FROZEN_MANIFEST= USER_C_MODULES=$(CURDIR)/native_modules BUILD=$(UNIX_BUILD)/obj

.PHONY: natmod firmware-unix-stock firmware-qemu-stock firmware-qemu-xtensa bench-xtensa
.PHONY: fuzz test-sanitize help setup test demo firmware firmware-unix firmware-rp2040 firmware-qemu firmware-esp32s3 flash bench bench-mcu bench-fleet clean check-micropython

help:
	@sed -n '1,/^$$/p' Makefile | sed -e 's/^# \{0,1\}//'

setup:
	MICROPY_DIR="$(if $(MICROPY_DIR_GIVEN),$(MICROPY_DIR))" \
		bash scripts/setup.sh

# (the stock unix port and the native .mpy: the module tests marked natmod run on both builds)
test: firmware-unix firmware-unix-stock natmod
	@test -x $(PYTHON) || { echo "make test: no .venv; run: make setup" >&2; exit 1; }
	@set +e; $(PYTHON) -m pytest -q -ra tests $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: FAILED: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

# The device app fine-tuning on shifted replay data in the unix port (scripts/demo.py).
demo: firmware-unix
	@test -x $(PYTHON) || { echo "make demo: no .venv; run: make setup" >&2; exit 1; }
	$(PYTHON) scripts/demo.py $(DEMO_ARGS)

ifeq ($(filter $(BOARD),$(BOARDS)),)
firmware:
	@echo "make firmware: unknown BOARD=$(BOARD); known boards: $(BOARDS)" >&2; exit 2
else
firmware: firmware-$(BOARD)
endif

check-micropython:
	@test -e $(MICROPY_DIR)/py/mpconfig.h || { \
		echo "no MicroPython source at $(MICROPY_DIR); run: make setup (or pass MICROPY_DIR=/path/to/micropython)" >&2; \
		exit 1; }

# Always descend into the port: its own dependency tracking rebuilds exactly what changed
# (including edits to native_modules/edgetune/*.c) and is a ~0.2 s no-op otherwise.
firmware-unix: check-micropython
	$(MAKE) -C $(MICROPY_DIR)/ports/unix -j$(JOBS) $(UNIX_MAKE_ARGS)
	@cmp -s $(UNIX_BUILD)/obj/micropython $(UNIX_BUILD)/micropython || \
		{ cp $(UNIX_BUILD)/obj/micropython $(UNIX_BUILD)/micropython.tmp && \
		  mv $(UNIX_BUILD)/micropython.tmp $(UNIX_BUILD)/micropython && \
		  echo "firmware: $(UNIX_BUILD)/micropython"; }

# The stock unix port (no edgetune module): build/unix-stock/micropython, for the native .mpy.
UNIX_STOCK_BUILD := $(CURDIR)/build/unix-stock
firmware-unix-stock: check-micropython
	$(MAKE) -C $(MICROPY_DIR)/ports/unix -j$(JOBS) $(filter-out USER_C_MODULES=% BUILD=%,$(UNIX_MAKE_ARGS)) \
		USER_C_MODULES= BUILD=$(UNIX_STOCK_BUILD)/obj
	@cmp -s $(UNIX_STOCK_BUILD)/obj/micropython $(UNIX_STOCK_BUILD)/micropython || \
		{ cp $(UNIX_STOCK_BUILD)/obj/micropython $(UNIX_STOCK_BUILD)/micropython.tmp && \
		  mv $(UNIX_STOCK_BUILD)/micropython.tmp $(UNIX_STOCK_BUILD)/micropython && \
		  echo "firmware: $(UNIX_STOCK_BUILD)/micropython"; }

# edgetune as a dynamic native module: build/natmod/<arch>/edgetune.mpy (+ package.json for
# mpremote mip), for each of ARCH (default: x64 armv6m armv7m armv7emsp; also xtensawin: with
# Espressif's toolchain if on PATH, else upstream LLVM, docs/xtensa.md; it also writes
# build/natmod/xtensawin-qemu, the build for the emulated LX7). The per-arch flags are in
# native_modules/edgetune/natmod/Makefile.
NATMOD_ARCHS := x64 armv6m armv7m armv7emsp
# ARCH only from the command line (an ARCH in the environment is some other tool's)
NATMOD_ARCH := $(if $(filter command line,$(origin ARCH)),$(ARCH),$(NATMOD_ARCHS))
natmod: check-micropython
	@test -x $(PYTHON) || { echo "make natmod: no .venv; run: make setup" >&2; exit 1; }
	@# mpy-cross compiles the device app for edgetune install (as scripts/firmware_qemu.sh builds it)
	@test -x $(MICROPY_DIR)/mpy-cross/build/mpy-cross || $(MAKE) -C $(MICROPY_DIR)/mpy-cross -j$(JOBS) >/dev/null
	@set -e; for a in $(NATMOD_ARCH); do \
		$(MAKE) --no-print-directory -C native_modules/edgetune/natmod ARCH=$$a MPY_DIR=$(MICROPY_DIR) \
			BUILD=$(CURDIR)/build/natmod/$$a PYTHON=$(PYTHON) -j$(JOBS) >/dev/null; \
		$(PYTHON) -m edgetune.device.natmod package $(CURDIR)/build/natmod/$$a; \
		if [ $$a = xtensawin ]; then \
			$(MAKE) --no-print-directory -C native_modules/edgetune/natmod ARCH=xtensawin MUL32HIGH=0 \
				MPY_DIR=$(MICROPY_DIR) BUILD=$(CURDIR)/build/natmod/xtensawin-qemu PYTHON=$(PYTHON) -j$(JOBS) >/dev/null; \
		fi; \
	done

# RPI_PICO firmware with our module: build/rp2040/firmware.uf2. Needs build/rp2-deps (pico-sdk,
# tinyusb, mbedtls, picotool from Debian's archive; scripts/rp2040_deps.sh, run by make setup).
firmware-rp2040: check-micropython
	MICROPY_DIR=$(MICROPY_DIR) JOBS=$(JOBS) MODEL="$(MODEL)" bash scripts/firmware_rp2040.sh

# Emulated Xtensa LX7 (qemu-system-xtensa -M sim -cpu de233_fpu): MicroPython's core built with
# upstream LLVM (scripts/xtensa/), loads build/natmod/xtensawin-qemu/edgetune.mpy; docs/xtensa.md.
firmware-qemu-xtensa: check-micropython
	MICROPY_DIR=$(MICROPY_DIR) JOBS=$(JOBS) bash scripts/firmware_qemu_xtensa.sh

# Emulated Cortex-M3 with our module, the device app and (MODEL=) a frozen model:
# build/qemu/firmware.elf, run with `edgetune emulate --board qemu`.
firmware-qemu: check-micropython
	MICROPY_DIR=$(MICROPY_DIR) JOBS=$(JOBS) MODEL="$(MODEL)" bash scripts/firmware_qemu.sh

# The same emulated board as a stock MicroPython: no edgetune module, no app, no model frozen
# (filesystem, time and boot sequence as above), with the RP2040's GC heap (251936 bytes,
# boards/rp2040/board.json) instead of the port's 143360: build/qemu-stock/firmware.elf, for
# `edgetune install` and the native .mpy (whose machine code lives in the heap).
firmware-qemu-stock: check-micropython
	MICROPY_DIR=$(MICROPY_DIR) JOBS=$(JOBS) STOCK=1 HEAP=251936 OUT=$(CURDIR)/build/qemu-stock bash scripts/firmware_qemu.sh

# ESP32_GENERIC_S3 (VARIANT=SPIRAM_OCT for octal PSRAM): build/esp32s3[-VARIANT]/firmware.bin.
# Fails at once, saying how to install ESP-IDF, where IDF_PATH is not set.
firmware-esp32s3:
	MICROPY_DIR=$(MICROPY_DIR) MODEL="$(MODEL)" VARIANT="$(VARIANT)" bash scripts/firmware_esp32s3.sh

# Write build/<board>/firmware.* to a connected board (host/edgetune/device/flash.py).
# BOARD=esp32s3 FIRMWARE=stock.bin [MODEL=m.etm]: esptool writes a downloaded stock MicroPython
# firmware, then edgetune install adds the xtensawin .mpy, the app and the model
# (host/edgetune/device/flash_stock.py). Without FIRMWARE=, build/esp32s3/firmware.bin from ESP-IDF.
flash:
	@case "$(BOARD)" in esp32s3|rp2040) ;; *) echo "make flash: BOARD=esp32s3 or BOARD=rp2040 (BOARD=$(BOARD) is emulated: edgetune emulate --board $(BOARD))" >&2; exit 2;; esac
	@if [ "$(BOARD)" = esp32s3 ] && [ -n "$(FIRMWARE)" ]; then \
		$(PYTHON) -m edgetune.device.flash_stock --firmware "$(FIRMWARE)" $(if $(PORT),--port $(PORT)) $(if $(MODEL),--model $(MODEL)) $(if $(DRY_RUN),--dry-run); \
	elif [ "$(BOARD)" = esp32s3 ] && [ -z "$$IDF_PATH" ] && [ ! -f build/esp32s3/firmware.bin ]; then \
		$(PYTHON) -m edgetune.device.flash_stock; \
	else \
		$(PYTHON) -m edgetune.device.flash --board $(BOARD) $(if $(PORT),--port $(PORT)) $(if $(DRY_RUN),--dry-run); \
	fi

# Host benchmarks: learning quality (bench/learning.py; scheme.py reuses its cached models) and
# training cost on the unix port (bench/training.py: arenas, callgrind instructions C vs pure Python).
# Benchmarks run as modules from the repository root (python -m bench.NAME), so they import the
# tests' support package (tests/support/) as the tests do, without editing sys.path.
bench: firmware-unix
	@test -x $(PYTHON) || { echo "make bench: no .venv; run: make setup" >&2; exit 1; }
	$(PYTHON) -m bench.learning
	$(PYTHON) -m bench.scheme
	$(PYTHON) -m bench.training

# The same on the emulated Xtensa LX7 (exact instruction trace): build/bench/xtensa.json.
bench-xtensa: firmware-qemu-xtensa
	$(MAKE) --no-print-directory natmod ARCH=xtensawin
	$(PYTHON) -m bench.xtensa

# Guest instructions per MAC of the forward kernels and per training step, under qemu -icount.
bench-mcu: firmware-qemu bench-xtensa
	$(PYTHON) -m bench.mcu

# Fleet learning (docs/fleet.md): simulation, scale, central DP, centralized baseline, leakage.
bench-fleet: firmware-unix
	$(PYTHON) -m bench.fleet

clean:
	rm -rf build/unix build/unix-stock build/qemu-stock build/qemu-xtensa build/natmod build/rp2040 build/rp2040-test build/qemu build/qemu-test build/esp32s3* build/scratch \
		build/fuzz build/unix-asan

# libFuzzer harnesses of the .etm parser, the scheme parser and the trained-weights loader
# (fuzz/, scripts/fuzz.sh), FUZZ_RUNS executions each; figures in build/bench/reliability.json.
FUZZ_RUNS ?= 1000000
fuzz:
	@test -x $(PYTHON) || { echo "make fuzz: no .venv; run: make setup" >&2; exit 1; }
	bash scripts/fuzz.sh run $(FUZZ_RUNS); rc=$$?; $(PYTHON) -m bench.reliability >/dev/null; exit $$rc

# The unix-port tests that exercise our module, on build/unix-asan/micropython (ASan + UBSan).
test-sanitize: check-micropython
	@test -x $(PYTHON) || { echo "make test-sanitize: no .venv; run: make setup" >&2; exit 1; }
	MICROPY_DIR=$(MICROPY_DIR) JOBS=$(JOBS) bash scripts/sanitize.sh test; rc=$$?; \
		$(PYTHON) -m bench.reliability >/dev/null; exit $$rc
