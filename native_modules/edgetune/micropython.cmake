# The edgetune user C module for CMake-based MicroPython ports (rp2, esp32).
# Build with: make -C $(MICROPY_DIR)/ports/<port> USER_C_MODULES=<path to this file>
# The same source list is in micropython.mk (unix, qemu).

add_library(usermod_edgetune INTERFACE)

# Every C file of the module (engine *.c, bindings/*.c) and the plain-C99 kernels,
# picked up by glob so a new file needs no edit here (CONFIGURE_DEPENDS re-runs the glob at
# every build).
file(GLOB EDGETUNE_SOURCES CONFIGURE_DEPENDS
    ${CMAKE_CURRENT_LIST_DIR}/*.c
    ${CMAKE_CURRENT_LIST_DIR}/bindings/*.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels/*.c
)

target_sources(usermod_edgetune INTERFACE ${EDGETUNE_SOURCES})

target_include_directories(usermod_edgetune INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}
    ${CMAKE_CURRENT_LIST_DIR}/kernels
)

# Arithmetic contract (docs/training.md): no FMA contraction in our sources, so float code
# gives the same bits as the numpy twin on every ISA. Per source file, not the whole firmware.
set_source_files_properties(${EDGETUNE_SOURCES} PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")

# The kernels' inner loops at -O2 rather than the ports' -Os (see micropython.mk).
file(GLOB EDGETUNE_KERNEL_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/kernels/*.c)
set_source_files_properties(${EDGETUNE_KERNEL_SOURCES} PROPERTIES COMPILE_OPTIONS "-ffp-contract=off;-O2")

target_link_libraries(usermod INTERFACE usermod_edgetune)
