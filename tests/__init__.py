"""The edgetune test suite (pytest; `make test`). Folders by what the tests exercise:
host/ (numpy twin, conversion, search, CLI), unix/ (the unix-port MicroPython with the module,
the native .mpy on the stock port, the pure-Python fallback), qemu/ (firmware builds, the
emulated boards through mpremote, Xtensa), c/ (C programs on the host compiler), fleet/
(Flower), and support/ (helpers they share, also imported by bench/ and fuzz/)."""
