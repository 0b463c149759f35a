"""What the tests share, imported as `from tests.support import tinymodels` by the tests, by
bench/ and by fuzz/ (run as modules from the repository root: python -m bench.mcu).

- tinymodels: small hand-built trainable .etm models (the app model, chains of every op)
- randmodels: random forward models with every op, and their C-vs-twin runner
- trainingcases: random trainable models x schemes, and their training runner
- modelgen: random Keras models through the real converter (cached in build/testmodels)
- tflitefile: editing a .tflite flatbuffer
- fallback: running the pure-Python edgetune_py on the unix port and on the qemu board
- qemuboard: the qemu test firmware (the app model frozen) and mpremote on its pty
- deviceapp: the `make demo` model and its sessions, app code under a board's heap
- natmod: the stock unix port importing the native .mpy (the "natmod" test variant)
- relhelp: the reliability tests' reference model, scripts and recorded figures
"""
