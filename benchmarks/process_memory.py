"""Process memory readings shared by the benchmarks (Linux ``/proc``), so every script measures alike."""

from __future__ import annotations

import ctypes
import gc


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def current_rss_mib() -> float:
    """Resident set size right now (``VmRSS``), in MiB."""
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    """The kernel's peak RSS since start or the last reset (``VmHWM``, what ``ru_maxrss`` reports), in MiB."""
    return _status_kib("VmHWM") / 1024


def reset_peak_rss() -> bool:
    """Reset the peak to the current RSS (Linux >= 4.0); False if that is not possible here."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return peak_rss_mib() <= current_rss_mib() + 1.0


def release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so that later allocations show in RSS.

    Without it, new work reuses heap pages freed earlier (model loading, text building) that are still
    resident, and the measured RSS increase understates what the work allocates.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
