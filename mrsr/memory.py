"""Memory this process may still allocate, and the check made before every large allocation.

The bound is the smallest of the kernel's ``MemAvailable``, the address-space limit
(``RLIMIT_AS``) less what the process already maps, and the cgroup's ``memory.max`` less its
usage: a claim that exceeds it is refused with the amount needed, instead of being attempted.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import torch

from mrsr.errors import MRSRError

__all__ = ["available_bytes", "check_fits", "device_bytes", "human"]


def human(n: float) -> str:
    """Bytes as a short human-readable figure: ``human(3e9) == '2.8 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _meminfo(key: str, path: str = "/proc/self/status") -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_left() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) - used


def available_bytes() -> int:
    """Bytes this process can still allocate, as far as the operating system tells."""
    bounds = [_meminfo("MemAvailable", "/proc/meminfo"), _cgroup_left()]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        bounds.append(soft - (_meminfo("VmSize") or 0))
    known = [b for b in bounds if b is not None]
    if not known:  # not Linux: trust the physical memory size
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(0, min(known))


def device_bytes(device: str | torch.device = "cpu") -> int:
    """Bytes still free on ``device``: on a CUDA GPU its free memory plus what PyTorch holds
    cached and unused there; elsewhere (the CPU, and the memory an MPS GPU shares with it)
    :func:`available_bytes`."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return available_bytes()


def check_fits(
    need: float,
    what: str,
    device: str | torch.device = "cpu",
    advice: str = "use a machine with more memory or a smaller volume",
) -> None:
    """Refuse (:class:`MRSRError`) a job whose estimated peak memory ``need`` on ``device`` does
    not fit; the message ends with ``advice``."""
    left = device_bytes(device)
    if need > left:
        where = "" if str(device) == "cpu" else f" on {device}"
        raise MRSRError(
            f"{what} needs about {human(need)} of memory, but only {human(left)} is "
            f"available{where}; {advice}"
        )
