// qstrs specific to the qemu-xtensa board
// *FORMAT-OFF*
Q(_boot.py)
