"""Resident memory of this process, from Linux's /proc (for the benchmarks' fresh subprocesses).

``reset_peak()`` sets the process's high-water mark (VmHWM) back to its current resident size,
so ``status_kb("VmHWM") - rss_before`` is the peak of what ran since; both return None / False
where /proc does not offer it.
"""

from __future__ import annotations


def status_kb(field):
    """A ``/proc/self/status`` field in kB (``"VmRSS"``, ``"VmHWM"``), or None."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (``clear_refs`` 5); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
