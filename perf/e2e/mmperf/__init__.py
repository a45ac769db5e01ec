"""perf/e2e: migrate the same real QEMU VM under QEMU's own migration modes
and through MemoryMotion, and report the two side by side."""
