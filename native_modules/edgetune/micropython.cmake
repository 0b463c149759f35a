# The edgetune user C module for CMake-based MicroPython ports (rp2, esp32).
# Build with: make -C $(MICROPY_DIR)/ports/<port> USER_C_MODULES=<path to this file>
# The same source list is in micropython.mk (unix, qemu).

add_library(usermod_edgetune INTERFACE)

# Bindings, the .etm parser/arena planner and the plain-C99 kernels, picked up by glob so a new
# kernel file needs no edit here (re-run the build's configure step after adding one).
file(GLOB EDGETUNE_KERNEL_SOURCES ${CMAKE_CURRENT_LIST_DIR}/kernels/*.c)
set(EDGETUNE_SOURCES "")
foreach(src modedgetune.c model.c)
    if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/${src})
        list(APPEND EDGETUNE_SOURCES ${CMAKE_CURRENT_LIST_DIR}/${src})
    endif()
endforeach()
list(APPEND EDGETUNE_SOURCES ${EDGETUNE_KERNEL_SOURCES})
list(SORT EDGETUNE_SOURCES)

target_sources(usermod_edgetune INTERFACE ${EDGETUNE_SOURCES})

target_include_directories(usermod_edgetune INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}
    ${CMAKE_CURRENT_LIST_DIR}/kernels
)

# Arithmetic contract (ARCHITECTURE.md §3): no FMA contraction in our sources, so float code
# gives the same bits as the numpy twin on every ISA. Per source file, not the whole firmware.
set_source_files_properties(${EDGETUNE_SOURCES} PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")

target_link_libraries(usermod INTERFACE usermod_edgetune)
