"""CPU threads: how many this process trains with (one rule for every task), and ``one_thread``.

PyTorch's default pool takes one thread per core the machine has. On a machine that other
processes keep busy that is the worst choice: every parallel region waits for its slowest thread,
and a thread the scheduler has parked stalls them all. Measured on 2 cores with two other
CPU-bound processes: the README's digits cnn (5 epochs) took 34.5 s on the default pool and
0.65 s on one thread. So the count is chosen, not inherited (``choose_threads``):

1. an explicit ``--threads`` wins; else a thread count the environment sets (``OMP_NUM_THREADS``,
   e.g. by ``compare --jobs`` workers or a batch scheduler) is kept;
2. otherwise: the cores this process may use (its affinity mask, capped by a cgroup CPU quota),
   minus the load the other processes put on them, measured over a short window, rounded to the
   nearest whole core, and at least 1.

``apply_threads`` applies the choice (torch's intra- and inter-op pools, the BLAS pools through
threadpoolctl), warns once per process when the machine is oversubscribed, and returns the record
that config.json keeps.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

LOAD_WINDOW_S = 0.1       # seconds of /proc/stat sampling before a run: 10 jiffies per core is
                          # enough to tell a busy core from an idle one, and short next to a run
LOAD_SAMPLES = 5          # procs_running readings averaged over that window (it is instantaneous)
OVERSUBSCRIBED_MARGIN = 0.5  # warn when this run's thread plus the others' load exceeds the usable
                             # cores by more than half a core (measurement noise stays quiet)


@dataclass(frozen=True)
class ThreadChoice:
    """What ``choose_threads`` decided, as config.json records it under "threads"."""
    requested: int | None   # --threads (None: choose)
    chosen: int             # threads torch trains with
    reason: str             # one line a user can read
    usable_cores: int       # affinity capped by the cgroup quota
    other_load: float | None  # cores' worth of work other processes ran (None: not measured)

    @property
    def oversubscribed(self) -> bool:
        return self.other_load is not None and self.other_load + 1 > self.usable_cores + OVERSUBSCRIBED_MARGIN


# ------------------------------------------------------------------ what this process may use

def affinity_cores() -> int:
    """CPU cores the scheduler lets this process run on (not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """Cores' worth of CPU time the cgroup quota allows (cgroup v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us / cpu.cfs_period_us``), the tightest along the path; None when unlimited."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        rel = Path(path.lstrip("/"))
        if hierarchy == "0" and controllers == "":   # v2: one unified tree
            bases = [root / rel, root]
            for base in bases:
                for directory in [base, *base.parents]:
                    if not str(directory).startswith(str(root)):
                        break
                    quotas += _v2_quota(directory / "cpu.max")
        elif "cpu" in controllers.split(","):        # v1: the cpu controller's own tree
            for mount in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
                for base in (mount / rel, mount):
                    quotas += _v1_quota(base)
    return min(quotas) if quotas else None


def _v2_quota(path: Path) -> list[float]:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return []
    return [] if quota == "max" else [int(quota) / int(period)]


def _v1_quota(directory: Path) -> list[float]:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return []
    return [quota / period] if quota > 0 and period > 0 else []


def usable_cores(affinity: int | None = None, quota: float | None = None) -> int:
    """Cores this process may use: its affinity, capped by the cgroup quota rounded to the nearest
    core (a quota of 1.5 cores runs 2 threads throttled a quarter of each period, better than 1).
    Both are measured when neither is given (tests pass them; an affinity alone means no quota).
    The one count of cores: threads per run, ``parallel.cpu_cores`` and ``cache.pool_workers``."""
    if affinity is None and quota is None:
        quota = cgroup_cpu_quota()
    affinity = affinity_cores() if affinity is None else affinity
    if quota is not None:
        affinity = min(affinity, max(1, math.floor(quota + 0.5)))
    return max(1, affinity)


# ------------------------------------------------------------------ what others use

def _read_proc_stat() -> tuple[dict[int, tuple[int, int]], int]:
    """{cpu index: (busy jiffies, total jiffies)} and procs_running, from /proc/stat."""
    per_cpu, running = {}, 0
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *fields = line.split()
            values = [int(v) for v in fields]
            idle = values[3] + (values[4] if len(values) > 4 else 0)   # idle + iowait
            total = sum(values[:8])                                    # guest time is in user
            per_cpu[int(name[3:])] = (total - idle, total)
        elif line.startswith("procs_running"):
            running = int(line.split()[1])
    return per_cpu, running


def other_load(window_s: float = LOAD_WINDOW_S) -> float | None:
    """Cores' worth of work other processes ran on this process's cores over ``window_s``.

    The larger of two measures: busy time on our cores (from /proc/stat, less this process's own
    CPU time), which cannot exceed the cores, and the runnable processes other than this one
    (procs_running, scaled to our share of the machine), which sees oversubscription beyond them.
    Falls back to the 1-minute load average where /proc is missing; None when neither exists."""
    try:
        cores = os.sched_getaffinity(0)
    except AttributeError:
        cores = None
    try:
        before, running = _read_proc_stat()
    except (OSError, ValueError):
        try:
            return max(0.0, os.getloadavg()[0])
        except (AttributeError, OSError):
            return None
    own_before, start = _own_cpu_seconds(), time.monotonic()
    runnable = [running]
    for _ in range(LOAD_SAMPLES - 1):
        time.sleep(window_s / (LOAD_SAMPLES - 1))
        after, running = _read_proc_stat()
        runnable.append(running)
    elapsed = max(1e-3, time.monotonic() - start)
    own = (_own_cpu_seconds() - own_before) / elapsed
    ours = [c for c in after if cores is None or c in cores]
    busy = 0.0
    for c in ours:
        if c in before:
            d_busy, d_total = after[c][0] - before[c][0], after[c][1] - before[c][1]
            busy += d_busy / d_total if d_total > 0 else 0.0
    busy = max(0.0, busy - own)
    share = len(ours) / max(1, len(after))
    queued = max(0.0, (sum(runnable) / len(runnable) - 1) * share)  # -1: this process reading it
    return max(busy, queued)


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# ------------------------------------------------------------------ the rule

def choose_threads(requested: int | None, *, affinity: int | None = None, quota: float | None = None,
                   load: float | None = None, environ: dict[str, str] | None = None,
                   measure: bool = True) -> ThreadChoice:
    """The thread count for a run. ``affinity``, ``quota`` and ``load`` are measured when not
    given (tests pass them); ``environ`` defaults to ``os.environ``."""
    environ = os.environ if environ is None else environ
    if quota is None and affinity is None:   # measured once: the reason below names the quota
        affinity, quota = affinity_cores(), cgroup_cpu_quota()
    cores = usable_cores(affinity, quota)
    if requested is not None:
        return ThreadChoice(requested, requested, "set by --threads", cores, None)
    env = environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return ThreadChoice(None, int(env), f"OMP_NUM_THREADS={env} in the environment", cores, None)
    if load is None and measure:
        load = other_load()
    if load is None:
        return ThreadChoice(None, cores, f"{cores} usable core(s); load not measurable", cores, None)
    chosen = max(1, min(cores, math.floor(cores - load + 0.5)))
    where = f"{cores} usable core(s)" + (f" (cgroup quota {quota:g})" if quota is not None else "")
    left = f"{chosen} left" if cores - load >= 0.5 else "none left, so 1 thread (the least)"
    return ThreadChoice(None, chosen, f"{where}, other processes' load {load:.2f}: {left}", cores, round(load, 2))


_warned = False


def apply_threads(requested: int | None, previous: dict | None = None, **measured) -> dict:
    """Choose (``choose_threads``), apply to torch and the BLAS pools, warn once per process when
    oversubscribed; returns the config.json record. ``previous`` is the record of the run being
    resumed: it continues on the count it started with (the reduction order of a matrix product
    depends on it, and a resumed run must give the numbers an uninterrupted one would).
    ``measured`` passes through to ``choose_threads`` (tests)."""
    global _warned
    if requested is None and previous and isinstance(previous.get("chosen"), int) and previous["chosen"] > 0:
        requested = previous["chosen"]
        choice = ThreadChoice(None, requested, f"as when the run started ({previous.get('reason')})",
                              usable_cores(), None)
    else:
        choice = choose_threads(requested, **measured)
    torch.set_num_threads(choice.chosen)
    with contextlib.suppress(RuntimeError):  # allowed only before the first inter-op work
        torch.set_num_interop_threads(choice.chosen)
    with contextlib.suppress(Exception):     # numpy's / scikit-learn's BLAS and OpenMP pools
        from threadpoolctl import threadpool_limits
        threadpool_limits(choice.chosen)
    if choice.oversubscribed and not _warned:
        _warned = True
        print(f"warning: this machine is oversubscribed: other processes keep {choice.other_load:.1f} of the "
              f"{choice.usable_cores} core(s) this process may use busy; training on {choice.chosen} thread(s) "
              "(--threads N to choose). Timings and time-budgeted results will be worse than on a quiet machine.",
              file=sys.stderr, flush=True)
    return {**asdict(choice), "oversubscribed": choice.oversubscribed}


@contextlib.contextmanager
def one_thread():
    """Run torch on one CPU thread, then restore the count.

    Small networks stepping through short sequences (forecast windows, per-utterance STFTs) gain
    nothing from a second thread and, on a busy machine, lose a lot to the pool's hand-offs
    (measured here: a 2-layer LSTM step 4 ms on one thread, 50 ms to 1.7 s on two busy cores).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
