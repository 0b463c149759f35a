# Freeze the device app into a firmware image (MICROPY_FROZEN_MANIFEST / FROZEN_MANIFEST):
# its bytecode then runs from flash and leaves the RAM heap to the model and training arena.
# main.py stays a file on the board's filesystem so a person can change what runs at boot.
freeze(".", ("app.py", "app_refit.py", "collect.py", "core.py", "hal.py", "log.py", "sensors.py", "store.py"))
