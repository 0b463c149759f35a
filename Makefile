# edgetune: `make setup` once on a fresh Debian machine, then `make test`.
#
#   make setup                    apt packages, MicroPython source, .venv, unix firmware
#   make test                     rebuild the unix firmware if needed, run the pytest suite
#   make demo                     the story: model -> unix port at the RP2040 heap -> fine-tune -> plot
#   make firmware [BOARD=unix]    build/unix/micropython (MicroPython unix port + our C module)
#   make firmware BOARD=rp2040 [MODEL=m.etm]  build/rp2040/firmware.uf2 (Raspberry Pi Pico)
#   make firmware BOARD=qemu [MODEL=m.etm]  build/qemu/firmware.elf (Cortex-M3 MPS2-AN385)
#   make firmware BOARD=esp32s3 [VARIANT=SPIRAM_OCT] [MODEL=m.etm]  needs ESP-IDF 5.2-5.4 (IDF_PATH)
#   make flash BOARD=esp32s3|rp2040 [PORT=...]  esptool / picotool or the RPI-RP2 drive
#   make bench                    learning, scheme and training benchmarks -> build/bench/*.json
#   make bench-mcu                guest instructions per MAC under qemu -> build/bench/mcu.json
#   make bench-fleet              fleet learning on Flower (~15 min) -> build/bench/fleet.json
#   make fuzz [FUZZ_RUNS=100000]  libFuzzer + ASan/UBSan on the C parsers -> build/bench/reliability.json
#   make test-sanitize            the unix-port tests on an ASan+UBSan build of the unix port
#   make clean                    remove our build outputs (keeps downloaded sources and .venv)
#
# MICROPY_DIR=/path uses your own MicroPython checkout instead of build/micropython.

SHELL := /bin/bash
.DEFAULT_GOAL := help

BOARD ?= unix
BOARDS := unix rp2040 qemu esp32s3
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

.PHONY: fuzz test-sanitize help setup test demo firmware firmware-unix firmware-rp2040 firmware-qemu firmware-esp32s3 flash bench bench-mcu bench-fleet clean check-micropython

help:
	@sed -n '1,/^$$/p' Makefile | sed -e 's/^# \{0,1\}//'

setup:
	MICROPY_DIR="$(if $(MICROPY_DIR_GIVEN),$(MICROPY_DIR))" \
		bash scripts/setup.sh

test: firmware-unix
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

# RPI_PICO firmware with our module: build/rp2040/firmware.uf2. Needs build/rp2-deps (pico-sdk,
# tinyusb, mbedtls, picotool from Debian's archive; scripts/rp2040_deps.sh, run by make setup).
firmware-rp2040: check-micropython
	MICROPY_DIR=$(MICROPY_DIR) JOBS=$(JOBS) MODEL="$(MODEL)" bash scripts/firmware_rp2040.sh

# Emulated Cortex-M3 with our module, the device app and (MODEL=) a frozen model:
# build/qemu/firmware.elf, run with `edgetune emulate --board qemu`.
firmware-qemu: check-micropython
	MICROPY_DIR=$(MICROPY_DIR) JOBS=$(JOBS) MODEL="$(MODEL)" bash scripts/firmware_qemu.sh

# ESP32_GENERIC_S3 (VARIANT=SPIRAM_OCT for octal PSRAM): build/esp32s3[-VARIANT]/firmware.bin.
# Fails at once, saying how to install ESP-IDF, where IDF_PATH is not set.
firmware-esp32s3:
	MICROPY_DIR=$(MICROPY_DIR) MODEL="$(MODEL)" VARIANT="$(VARIANT)" bash scripts/firmware_esp32s3.sh

# Write build/<board>/firmware.* to a connected board (host/edgetune/flash.py).
flash:
	@case "$(BOARD)" in esp32s3|rp2040) ;; *) echo "make flash: BOARD=esp32s3 or BOARD=rp2040 (BOARD=$(BOARD) is emulated: edgetune emulate --board $(BOARD))" >&2; exit 2;; esac
	$(PYTHON) -m edgetune.flash --board $(BOARD) $(if $(PORT),--port $(PORT))

# Host benchmarks: learning quality (bench/learning.py; scheme.py reuses its cached models) and
# training cost on the unix port (bench/training.py: arenas, callgrind instructions C vs pure Python).
bench: firmware-unix
	@test -x $(PYTHON) || { echo "make bench: no .venv; run: make setup" >&2; exit 1; }
	$(PYTHON) bench/learning.py
	$(PYTHON) bench/scheme.py
	$(PYTHON) bench/training.py

# Guest instructions per MAC of the forward kernels and per training step, under qemu -icount.
bench-mcu: firmware-qemu
	$(PYTHON) bench/mcu.py

# Fleet learning (docs/fleet.md): simulation, scale, central DP, centralized baseline, leakage.
bench-fleet: firmware-unix
	$(PYTHON) bench/fleet.py

clean:
	rm -rf build/unix build/rp2040 build/rp2040-test build/qemu build/qemu-test build/esp32s3* build/scratch \
		build/fuzz build/unix-asan

# libFuzzer harnesses of the .etm parser, the scheme parser and the trained-weights loader
# (fuzz/, scripts/fuzz.sh), FUZZ_RUNS executions each; figures in build/bench/reliability.json.
FUZZ_RUNS ?= 100000
fuzz:
	@test -x $(PYTHON) || { echo "make fuzz: no .venv; run: make setup" >&2; exit 1; }
	bash scripts/fuzz.sh run $(FUZZ_RUNS); rc=$$?; $(PYTHON) bench/reliability.py >/dev/null; exit $$rc

# The unix-port tests that exercise our module, on build/unix-asan/micropython (ASan + UBSan).
test-sanitize: check-micropython
	@test -x $(PYTHON) || { echo "make test-sanitize: no .venv; run: make setup" >&2; exit 1; }
	MICROPY_DIR=$(MICROPY_DIR) JOBS=$(JOBS) bash scripts/sanitize.sh test; rc=$$?; \
		$(PYTHON) bench/reliability.py >/dev/null; exit $$rc
