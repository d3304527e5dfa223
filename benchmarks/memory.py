"""Memory figures of this process for the benchmarks that measure it (Linux /proc; ru_maxrss elsewhere)."""

from __future__ import annotations

import resource
from pathlib import Path


def status_mib(field: str) -> float | None:
    """A field of /proc/self/status (VmRSS, VmHWM, ...) in MiB, or None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def reset_peak_rss() -> float:
    """Start a new peak-RSS window (Linux: clear_refs 5) and return the RSS now, in MiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: the peak then includes the setup
    return status_mib("VmRSS") or 0.0


def peak_rss_mib() -> float:
    """Peak RSS since the last reset_peak_rss (or since the process started), in MiB.

    VmHWM, not ru_maxrss where there is a choice: Linux carries ru_maxrss over from the parent
    across fork + exec, so a worker subprocess would report its parent's peak."""
    hwm = status_mib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
