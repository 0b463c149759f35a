# Frozen modules of the stock qemu firmware (make firmware BOARD=qemu-stock): only what a stock
# MicroPython board has of its own -- a time module, and a filesystem mounted at boot (boards/qemu/
# modules: time, _boot.py, qemufs). No edgetune module, no device app, no model:
# `edgetune install` puts the native .mpy, the app and the model on the filesystem.
freeze("../qemu/modules")
