"""Test harness for MemoryMotion: real QEMU VMs, network namespaces, and
memmotiond processes."""
