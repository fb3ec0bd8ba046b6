"""Where a comparison's (model, seed) runs are trained: one after another in this process, in N local
processes (``compare --jobs N``), or as tasks on a Ray cluster (``compare --ray ADDRESS|auto``).

Every path trains a run folder with the same rule (``train_or_resume``), so a run killed in any of
them is resumed by the next ``compare`` with the same flags, in any of them. A run's numbers depend
only on its settings and on the number of CPU threads it uses (the reduction order of a matrix
product changes with the threads), so a comparison gives the same numbers sequentially, in local
processes and on Ray when each run gets the same thread count.

Local processes are started with 'spawn' (a fresh interpreter: no inherited CUDA context or OpenMP
pool); each prepares the data once (for an image folder: opens the memory-mapped cache the parent
built) and keeps it for the runs it is given next. On CPU the comparing process trains runs too,
as one of the N lanes, so ``--jobs N`` starts N - 1 processes.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import dataclasses
import json
import multiprocessing
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from deepskeptic.errors import UserError
from deepskeptic.threads import usable_cores

RAY_EXTRA = "pip install 'deepskeptic[ray]'"


@dataclass(frozen=True)
class RunSpec:
    """One (model, seed) run of a comparison: its resolved settings and its folder."""
    model: str
    seed: int
    settings: dict[str, Any]
    run_dir: str


# ------------------------------------------------------------------ one run

def train_or_resume(task, settings: dict[str, Any], run_dir: Path, prepared: Any, *,
                    progress: bool | None = None):
    """Train the comparison run ``run_dir``: resumed from its checkpoint when an earlier (killed)
    attempt left its config.json, trained afresh otherwise. ``progress`` overrides the run's own
    setting (parallel runs show no bars: their lines would interleave)."""
    from deepskeptic.runs import Run
    from deepskeptic.training import rename_settings, train
    if run_dir.exists() and (run_dir / "config.json").is_file():
        saved = rename_settings(task, Run(run_dir).config["settings"], "run")
        if progress is not None:
            saved["progress"] = progress
        return train(task, saved, prepared=prepared, resume=Run(run_dir))
    if run_dir.exists():
        for leftover in run_dir.iterdir():  # a run killed before writing its config
            leftover.unlink() if leftover.is_file() else None
    settings = dict(settings) if progress is None else {**settings, "progress": progress}
    return train(task, settings, prepared=prepared, out=run_dir)


def set_threads(threads: int) -> None:
    """Limit this process to ``threads`` CPU threads: torch's pool, BLAS/OpenMP pools (threadpoolctl)
    and, through the environment, any process it starts."""
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    set_threads_of_pools(threads)


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


_PREPARED: dict[str, Any] = {}  # in a worker process: the data of the comparison it works for


def _job(task_name: str, prepare_settings: dict[str, Any], spec: RunSpec, threads: int | None = None,
         cwd: str | None = None) -> dict[str, Any]:
    """Train one run in a worker (a local process or a Ray task); returns its metrics.json."""
    from deepskeptic.tasks import get_task
    if cwd is not None and os.path.isdir(cwd):  # Ray workers start elsewhere: relative --data paths
        os.chdir(cwd)
    if threads is not None:
        set_threads(threads)
    task = get_task(task_name)
    key = json.dumps([task_name, prepare_settings], sort_keys=True, default=str)
    if key not in _PREPARED:
        _PREPARED.clear()  # one comparison's data at a time
        _PREPARED[key] = task.prepare(dict(prepare_settings))
    run = train_or_resume(task, spec.settings, Path(spec.run_dir), _PREPARED[key], progress=False)
    return run.metrics


def _finished_line(task, done: int, total: int, spec: RunSpec, metrics: dict[str, Any]) -> str:
    metric = task.primary_metric
    return (f"[{done}/{total}] {spec.model}, seed {spec.seed}: {metric} {metrics[metric]:.4f}, "
            f"{metrics['train_seconds']:.1f} s of training -> {spec.run_dir}")


# ------------------------------------------------------------------ one after another

def run_sequential(task, specs: list[RunSpec], prepared: Any) -> None:
    for spec in specs:
        print(f"== {spec.model}, seed {spec.seed} -> {spec.run_dir}", flush=True)
        train_or_resume(task, spec.settings, Path(spec.run_dir), prepared)


# ------------------------------------------------------------------ local processes

def _init_worker(threads: int, gpus: Any) -> None:
    """Runs first in every spawned worker, before torch touches a device."""
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get()  # one GPU per job, fixed for its life
    set_threads(threads)


def _uses_cuda(specs: list[RunSpec]) -> bool:
    import torch
    device = specs[0].settings.get("device", "auto")
    return device != "cpu" and torch.cuda.is_available()


def _visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (ids or UUIDs)."""
    import torch
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()][:torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def run_local(task, specs: list[RunSpec], prepare_settings: dict[str, Any], jobs: int,
              threads_per_job: int | None = None, prepared: Any = None) -> None:
    """Train ``specs`` in ``jobs`` lanes: each takes usable cores // jobs CPU threads (or
    ``threads_per_job``) and, on CUDA, a GPU of its own (round robin when jobs outnumber GPUs).

    On CPU this process is one of the lanes (with ``prepared``, the data it already holds) and
    ``jobs`` - 1 spawned processes are the others: a spawned interpreter costs seconds of imports
    and data preparation on the same cores the runs need, and this one has paid them already. The
    lanes take the next run when they finish one, so a long run does not hold the others back."""
    if not specs:
        return
    jobs = min(jobs, len(specs))
    threads = _threads_per_lane(jobs, threads_per_job)
    context = multiprocessing.get_context("spawn")
    if _uses_cuda(specs) or prepared is None:
        gpus = None
        if _uses_cuda(specs):
            names = _visible_gpus()
            gpus = context.Queue()
            for i in range(jobs):
                gpus.put(names[i % len(names)])
            where = f"{len(names)} GPU(s)"
        else:
            where = f"{threads} CPU thread(s) each"
        print(f"training {len(specs)} run(s) in {jobs} process{'es' if jobs > 1 else ''} ({where})", flush=True)
        pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                                      initargs=(threads, gpus))
        futures = {pool.submit(_job, task.name, prepare_settings, spec): spec for spec in specs}
        _collect(task, futures, pool.shutdown, lambda f: f.result())
        return
    print(f"training {len(specs)} run(s) in {jobs} process{'es' if jobs > 1 else ''} "
          f"({threads} CPU thread(s) each)", flush=True)
    lanes = _Lanes(task, specs)
    pool = feeder = None
    if jobs > 1:
        pool = cf.ProcessPoolExecutor(max_workers=jobs - 1, mp_context=context, initializer=_init_worker,
                                      initargs=(threads, None))
        feeder = threading.Thread(target=_feed, args=(pool, jobs - 1, lanes, task.name, prepare_settings),
                                  name="deepskeptic-jobs", daemon=True)
        feeder.start()
    try:
        with _threads(threads):
            while (spec := lanes.take()) is not None:
                try:
                    run = train_or_resume(task, spec.settings, Path(spec.run_dir), prepared, progress=False)
                except Exception as exc:  # noqa: BLE001 - reported after the started runs end
                    lanes.failed(spec, exc)
                    continue
                lanes.finished(spec, run.metrics)
        if feeder is not None:
            feeder.join()
    except KeyboardInterrupt:
        lanes.stop()
        print("interrupted: unfinished runs keep their checkpoints; the same compare command resumes "
              "them", file=sys.stderr, flush=True)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if lanes.error is not None:
        raise lanes.error


def _threads_per_lane(jobs: int, threads_per_job: int | None) -> int:
    return threads_per_job or max(1, usable_cores() // jobs)


def lane_threads(specs: list[RunSpec], jobs: int, threads_per_job: int | None = None):
    """Where the comparing process will be a lane of ``run_local`` (several jobs, CPU): a context
    on that lane's thread count; otherwise one that changes nothing."""
    jobs = min(jobs, len(specs))
    if jobs <= 1 or _uses_cuda(specs):
        return contextlib.nullcontext()
    return _threads(_threads_per_lane(jobs, threads_per_job))


@contextlib.contextmanager
def _threads(threads: int):
    """This process on ``threads`` CPU threads while it is a lane (its runs read OMP_NUM_THREADS,
    as the spawned lanes' do), then as it was."""
    import torch
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    previous = torch.get_num_threads()
    set_threads(threads)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        set_threads_of_pools(previous)


def set_threads_of_pools(threads: int) -> None:
    """torch's and the BLAS pools' thread count, leaving the environment alone."""
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(threads)
    threadpool_limits(threads)


class _Lanes:
    """The runs not yet given out, shared by this process and the thread that feeds the spawned
    ones; counts and prints finished runs; after the first failure gives out no more."""

    def __init__(self, task, specs: list[RunSpec]):
        self.task, self.total = task, len(specs)
        self.pending = collections.deque(specs)
        self.lock = threading.Lock()
        self.done, self.error, self.stopped = 0, None, False

    def take(self) -> RunSpec | None:
        with self.lock:
            return None if self.stopped or not self.pending else self.pending.popleft()

    def stop(self) -> None:
        with self.lock:
            self.stopped = True

    def finished(self, spec: RunSpec, metrics: dict[str, Any]) -> None:
        with self.lock:
            self.done += 1
            print(_finished_line(self.task, self.done, self.total, spec, metrics), flush=True)

    def failed(self, spec: RunSpec, error: BaseException) -> None:
        with self.lock:
            self.stopped = True
            if self.error is None:
                self.error = error
                print(f"error in {spec.model}, seed {spec.seed}: {error}; waiting for the runs already "
                      "started", file=sys.stderr, flush=True)


def _feed(pool: cf.ProcessPoolExecutor, workers: int, lanes: _Lanes, task_name: str,
          prepare_settings: dict[str, Any]) -> None:
    """Keep each spawned process busy with one run at a time until no run is left."""
    running: dict[cf.Future, RunSpec] = {}
    while True:
        while len(running) < workers and (spec := lanes.take()) is not None:
            running[pool.submit(_job, task_name, prepare_settings, spec)] = spec
        if not running:
            return
        done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
        for future in done:
            spec = running.pop(future)
            try:
                metrics = future.result()
            except cf.CancelledError:
                continue
            except cf.process.BrokenProcessPool:
                lanes.failed(spec, UserError(
                    "a job process died (killed, or out of memory?); finished runs are kept and the "
                    "same compare command resumes the others"))
                continue
            except BaseException as exc:  # noqa: BLE001 - reported after the started runs end
                lanes.failed(spec, exc)
                continue
            lanes.finished(spec, metrics)


def _collect(task, futures: dict, shutdown: Callable[..., None], result: Callable[[Any], dict]) -> None:
    """Print one line per finished run; on a failure, stop giving out new runs, let the started
    ones finish (their folders are kept), then raise the first error."""
    done, first_error = 0, None
    try:
        for future in cf.as_completed(futures):
            spec = futures[future]
            try:
                metrics = result(future)
            except cf.CancelledError:
                continue
            except cf.process.BrokenProcessPool:
                first_error = first_error or UserError(
                    "a job process died (killed, or out of memory?); finished runs are kept and the "
                    "same compare command resumes the others")
                continue
            except Exception as exc:  # noqa: BLE001 - reported after the started runs end
                if first_error is None:
                    first_error = exc
                    for other in futures:
                        other.cancel()
                    print(f"error in {spec.model}, seed {spec.seed}: {exc}; waiting for the runs already "
                          "started", file=sys.stderr, flush=True)
                continue
            done += 1
            print(_finished_line(task, done, len(futures), spec, metrics), flush=True)
    except KeyboardInterrupt:
        print("interrupted: unfinished runs keep their checkpoints; the same compare command resumes "
              "them", file=sys.stderr, flush=True)
        for other in futures:
            other.cancel()
        raise
    finally:
        shutdown(wait=True, cancel_futures=True)
    if first_error is not None:
        raise first_error


# ------------------------------------------------------------------ Ray

def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


def _connect(ray, address: str) -> bool:
    """Connect to the cluster at ``address`` ('auto': the one this machine belongs to, or a local
    instance when there is none). True when this call started Ray (and so must stop it)."""
    if ray.is_initialized():
        return False
    if address == "auto":
        try:
            ray.init(address="auto", include_dashboard=False, log_to_driver=True)
            return True
        except ConnectionError:
            print("no Ray cluster found: starting a local Ray instance", file=sys.stderr, flush=True)
            ray.init(include_dashboard=False)
            return True
    try:
        ray.init(address=address, include_dashboard=False)
    except ConnectionError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address} ({exc}): check the address "
                        "('ray status' on a cluster node shows it), or use --ray auto") from None
    return True


def _ray_resources(ray, specs: list[RunSpec], threads_per_job: int | None) -> tuple[int, int]:
    """(CPUs, GPUs) each run asks the cluster for: one GPU when the runs use CUDA and the cluster has
    GPUs; CPUs: the cluster's share per run, at most one node's, or ``threads_per_job``."""
    total = ray.cluster_resources()
    device = specs[0].settings.get("device", "auto")
    gpus = 1 if device != "cpu" and total.get("GPU", 0) >= 1 else 0
    if device == "cuda" and not gpus:
        raise UserError("--device cuda was asked for but the Ray cluster has no GPUs; use --device cpu")
    if threads_per_job:
        return threads_per_job, gpus
    node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    share = int(total.get("CPU", 1) // len(specs))
    return int(max(1, min(node_cpus, share))), gpus


def run_ray(task, specs: list[RunSpec], prepare_settings: dict[str, Any], address: str,
            threads_per_job: int | None = None) -> None:
    """Train ``specs`` as Ray tasks; the run folders (absolute paths under --out) must be on storage
    every node shares, and every node needs deepskeptic installed."""
    ray = import_ray()
    if not specs:
        return
    started = _connect(ray, address)
    try:
        cpus, gpus = _ray_resources(ray, specs, threads_per_job)
        print(f"training {len(specs)} run(s) as Ray tasks ({cpus} CPU(s)"
              f"{', 1 GPU' if gpus else ''} each)", flush=True)
        remote = ray.remote(_job).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        specs = [dataclasses.replace(spec, run_dir=str(Path(spec.run_dir).absolute())) for spec in specs]
        refs = {remote.remote(task.name, prepare_settings, spec, cpus, os.getcwd()): spec for spec in specs}
        _collect_ray(ray, task, refs)
    finally:
        if started:
            ray.shutdown()


def _collect_ray(ray, task, refs: dict) -> None:
    pending, done, first_error = list(refs), 0, None
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            spec = refs[ready[0]]
            try:
                metrics = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
                first_error = first_error or cause
                print(f"error in {spec.model}, seed {spec.seed}: {cause}", file=sys.stderr, flush=True)
                continue
            except ray.exceptions.RayError as exc:  # a worker or node died
                first_error = first_error or UserError(
                    f"the Ray task of {spec.model}, seed {spec.seed} died ({type(exc).__name__}); finished "
                    "runs are kept and the same compare command resumes the others")
                continue
            done += 1
            print(_finished_line(task, done, len(refs), spec, metrics), flush=True)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        raise
    if first_error is not None:
        raise first_error
