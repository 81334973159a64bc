"""SLURM for real: ``eqtrain -m hydra/launcher=slurm`` against a throwaway single-node cluster.

A session fixture starts munged, slurmctld and slurmd with ``scripts/slurm_cluster.sh`` in a
temporary directory and stops them at the end. Without SLURM (or without root, which slurmd
needs) the tests skip, unless ``EQTRAIN_REQUIRE_SLURM=1`` (CI): there a missing cluster fails.

An interrupted job is compared with the same config trained here without SLURM (same overrides,
one torch thread): the final metrics.json byte for byte, and every TensorBoard curve step by step.
Every wait is a bounded poll for an event (a file, a job state, a pending signal), never a sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ..helpers import EQTRAIN, scalars

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.xdist_group("slurm")]  # one cluster

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm_cluster.sh"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")

# ~300 steps of 20 (about 10 s of training on one core): long enough to interrupt after the first
# epoch's checkpoint, short enough for CI. One torch thread here and in the job: CPU sums split by
# thread, so bitwise equality needs the same count.
CONFIG = ("experiment=smoke", "epochs=15", "max_steps=null", "threads=1")
# Small enough for a 2-core machine: one core and 1 GB per job, so two jobs run side by side.
LAUNCHER = ("hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1")


class Cluster:
    def __init__(self, conf: Path) -> None:
        self.conf = conf
        self.env = {**os.environ, "SLURM_CONF": str(conf), "HYDRA_FULL_ERROR": "1"}

    def scontrol(self, *args: str) -> str:
        return subprocess.run(
            ["scontrol", *args], env=self.env, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields (JobState, Restarts, ...); the controller keeps a finished job 300 s."""
        fields = self.scontrol("show", "job", "--oneliner", job_id).split()
        return dict(f.split("=", 1) for f in fields if "=" in f)

    def sweep(self, cwd: Path, sweep_dir: Path, *overrides: str) -> Background:
        """``eqtrain -m`` through the slurm launcher preset, in the background."""
        return Background([EQTRAIN, "-m", *LAUNCHER, *overrides, f"hydra.sweep.dir={sweep_dir}"], cwd, self.env)


class Background:
    """A command in the background, its output in a file (a pipe nobody reads could fill and block it)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.log = cwd / f"{Path(args[0]).name}-{time.monotonic_ns()}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text()[-4000:]

    def finish(self, timeout: float = 600) -> str:
        """Wait for the command; it must succeed. Its output's tail."""
        self.proc.wait(timeout=timeout)
        assert self.proc.returncode == 0, self.output()
        return self.output()

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc) -> None:  # a failed test leaves no sweep behind
        self.kill()


@pytest.fixture(scope="session")
def cluster(request):
    missing = [tool for tool in DAEMONS if shutil.which(tool) is None]
    why = None
    if missing:
        why = f"no SLURM here ({', '.join(missing)} not found; apt-get install slurm-wlm munge)"
    elif os.geteuid() != 0:
        why = "the throwaway SLURM cluster needs root (slurmd starts the jobs)"
    if why:
        if os.environ.get("EQTRAIN_REQUIRE_SLURM") == "1":
            pytest.fail(f"EQTRAIN_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)
    # The script makes its own directory: munged wants every directory above its socket searchable
    # by all, which pytest's basetemp (mode 700) is not.
    start = subprocess.run([SCRIPT, "start"], capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, f"{SCRIPT} start failed:\n{start.stderr[-3000:]}"
    conf = Path(start.stdout.strip().removeprefix("export SLURM_CONF="))
    print(start.stderr.strip())  # the start-up time
    yield Cluster(conf)
    subprocess.run([SCRIPT, "stop", conf.parent], capture_output=True, timeout=120)
    if request.session.testsfailed:
        print(f"a test failed: the cluster's config, state and logs are kept in {conf.parent}")
    else:
        shutil.rmtree(conf.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Callable[[], Path]:
    """CONFIG trained here without SLURM, in the background from the first test that asks for it."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run = Background([EQTRAIN, *CONFIG, f"hydra.run.dir={run_dir}"], run_dir.parent)

    def finished() -> Path:
        run.finish()
        return run_dir

    yield finished
    run.kill()


def poll(what: str, check: Callable[[], object], sweep: Background, timeout: float = 180, seen=None):
    """Until ``check()`` is truthy (an event, not a guess at its timing), while the sweep runs; its value.

    When it gives up, the failure says what it saw: ``seen()`` (e.g. the job's state) and the sweep's output.
    """
    deadline = time.monotonic() + timeout
    while not (value := check()):
        ended = not sweep.running()
        if ended or time.monotonic() > deadline:
            saw = f" (last seen: {seen()})" if seen is not None else ""
            sweep.kill()
            why = "the sweep ended while waiting for" if ended else f"after {timeout:.0f} s, still no"
            pytest.fail(f"{why} {what}{saw}:\n{sweep.output()}")
        time.sleep(0.05)
    return value


def job_of(sweep_dir: Path) -> Callable[[], str | None]:
    """The one job of a sweep (``<id>``, or ``<array>_<task>`` in an array), once submitit has filed it."""

    def found() -> str | None:
        jobs = [p.parent.name for p in (sweep_dir / ".submitit").glob("*/*_submitted.pkl")]
        return jobs[0] if len(jobs) == 1 else None

    return found


def job_log(sweep_dir: Path, job: str) -> str:
    """Everything the job printed, over all its attempts (submitit opens its logs with --open-mode=append)."""
    return "".join(p.read_text() for p in sorted((sweep_dir / ".submitit" / job).glob("*_log.*")))


def the_run(sweep_dir: Path) -> Path:
    (run,) = [p.parent for p in sweep_dir.glob("*/.hydra")]
    return run


def assert_same_run(run: Path, reference: Path) -> None:
    """Bitwise the uninterrupted run: metrics.json byte for byte, each curve with no duplicated or missing step."""
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    assert (run / "metrics.json").read_text() == (reference / "metrics.json").read_text()
    resumed, expected = scalars(run), scalars(reference)
    assert resumed.keys() == expected.keys()
    for tag, (steps, values) in expected.items():
        assert resumed[tag][0] == steps, f"{tag}: steps differ (duplicated or missing)"
        assert resumed[tag][1] == values, f"{tag}: values differ"


def running_again(cluster: Cluster, job: str, restarts: int) -> Callable[[], float | None]:
    """When the job runs again after its ``restarts``-th requeue: the time seen, else None."""

    def check() -> float | None:
        info = cluster.job(job)
        return time.monotonic() if int(info["Restarts"]) >= restarts and info["JobState"] == "RUNNING" else None

    return check


def job_state(cluster: Cluster, job: str) -> Callable[[], str]:
    """What ``scontrol`` says of the job now, for a failure message (never raises)."""

    def seen() -> str:
        try:
            info = cluster.job(job)
        except (subprocess.SubprocessError, OSError) as error:
            return f"scontrol failed: {error}"
        return ", ".join(f"{key}={info.get(key)}" for key in ("JobState", "Reason", "Restarts", "RunTime"))

    return seen


def test_a_sweep_with_an_ensemble_job_completes(cluster, tmp_path, reference):
    """Two jobs, one of them seeds=2 (two run directories, one checkpoint): every run completed.

    (``reference`` only starts the later tests' uninterrupted run now, alongside.)
    """
    started = time.monotonic()
    with cluster.sweep(tmp_path, tmp_path / "sweep", "experiment=smoke", "threads=1", "seeds=1,2") as sweep:
        out = sweep.finish()
    print(f"two-job sweep: {time.monotonic() - started:.1f} s")
    metrics = sorted(p.relative_to(tmp_path / "sweep") for p in (tmp_path / "sweep").rglob("metrics.json"))
    assert [p.parts[1:] for p in metrics] == [("metrics.json",), ("seed=0", "metrics.json"), ("seed=1", "metrics.json")]
    for path in metrics:
        assert json.loads((tmp_path / "sweep" / path).read_text())["status"] == "completed", out[-3000:]
    assert "resume: auto" in next((tmp_path / "sweep").rglob("config.yaml")).read_text()


def test_a_job_preempted_by_a_higher_partition_resumes_bitwise(cluster, tmp_path, reference):
    """A job in partition ``high`` that needs the whole node preempts the one in ``low`` (PreemptMode=REQUEUE):
    SIGTERM, checkpoint, requeued by SLURM itself, resumed when the node is free again. (Before the
    other interrupted jobs: the exclusive job would preempt them too.)

    The scheduler acts on the high job within ``sched_interval`` (5 s), long enough for a fast machine
    to finish the whole run first; so the job is held (SIGSTOP) after its first checkpoint until
    SLURM's SIGTERM is there: a job that was still running when it was preempted, on any machine.
    """
    sweep_dir = tmp_path / "sweep"
    with cluster.sweep(tmp_path, sweep_dir, *CONFIG, "hydra.launcher.partition=low") as sweep:
        job = poll("job under .submitit/", job_of(sweep_dir), sweep)
        poll("first checkpoint", lambda: list(sweep_dir.glob("*/checkpoint.pt")), sweep)
        with held_until(signal.SIGTERM, cluster, job, sweep_dir, sweep):
            subprocess.run(
                ["sbatch", "--partition=high", "--exclusive", "--mem=100", "--output=/dev/null", "--wrap=true"],
                env=cluster.env, cwd=tmp_path, check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        preempted = time.monotonic()
        restarted = poll(
            "restart after the preemption", running_again(cluster, job, 1), sweep, seen=job_state(cluster, job)
        )
        sweep.finish()
    print(f"preemption: the job ran again {restarted - preempted:.1f} s after SIGTERM")

    log = job_log(sweep_dir, job)
    assert f"stopped by signal {int(signal.SIGTERM)}" in log, log[-3000:]
    assert int(cluster.job(job)["Restarts"]) == 1
    assert_same_run(the_run(sweep_dir), reference())


def test_a_job_requeued_mid_run_resumes_bitwise(cluster, tmp_path, reference, at_time_limit):
    """``scontrol requeue`` sends SIGTERM: eqtrain checkpoints and exits; SLURM restarts the job, resume=auto continues.

    (``at_time_limit`` only starts the last test's job now, alongside.)
    """
    sweep_dir = tmp_path / "sweep"
    with cluster.sweep(tmp_path, sweep_dir, *CONFIG, "hydra.launcher.timeout_min=5") as sweep:
        job = poll("job under .submitit/", job_of(sweep_dir), sweep)
        poll("first checkpoint", lambda: list(sweep_dir.glob("*/checkpoint.pt")), sweep)  # in epoch 2 now
        with held_until(signal.SIGTERM, cluster, job, sweep_dir, sweep):  # mid-run on any machine
            cluster.scontrol("requeue", job)
        requeued = time.monotonic()
        restarted = poll(
            "restart after the requeue", running_again(cluster, job, 1), sweep, seen=job_state(cluster, job)
        )
        sweep.finish()
    print(f"requeue: the job ran again {restarted - requeued:.1f} s after scontrol requeue")

    log = job_log(sweep_dir, job)
    assert f"stopped by signal {int(signal.SIGTERM)}" in log, log[-3000:]  # interrupted mid-run, checkpointed
    assert int(cluster.job(job)["Restarts"]) == 1
    assert_same_run(the_run(sweep_dir), reference())


def proc_status(pid: int) -> dict[str, str] | None:
    """/proc/<pid>/status as a dict (State, SigPnd, ShdPnd, ...); None once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except FileNotFoundError:
        return None
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def stopped(pid: int) -> bool:
    status = proc_status(pid)
    return status is None or status["State"].startswith("T")


def released(pid: int, sig: signal.Signals) -> bool:
    """A held process is let go: ``sig`` waits in its pending set, or SLURM continued it to deliver
    the signal (slurmstepd sends SIGCONT first), or it is gone."""
    status = proc_status(pid)
    if status is None:
        return True
    bit = 1 << (sig - 1)
    pending = any(int(status.get(key, "0"), 16) & bit for key in ("SigPnd", "ShdPnd"))
    return pending or not status["State"].startswith("T")


def training_pid(cluster: Cluster, job: str) -> int | None:
    """The job's task (step 0, local task 0: the Python process that trains); None if it runs no more."""
    try:
        pids = cluster.scontrol("listpids", cluster.job(job)["JobId"])
    except subprocess.CalledProcessError:
        return None
    for line in pids.splitlines()[1:]:
        pid, _, step, local = line.split()[:4]
        if step == "0" and local == "0":
            return int(pid)
    return None


@contextlib.contextmanager
def held_until(sig: signal.Signals, cluster: Cluster, job: str, sweep_dir: Path, sweep: Background, timeout=90):
    """Hold the job's training process (SIGSTOP) from entry until SLURM sends it ``sig`` after the block,
    then let it go: the signal meets the job mid-run however fast the machine is."""
    pid = training_pid(cluster, job)
    if pid is not None:
        os.kill(pid, signal.SIGSTOP)
    try:  # a signal is delivered asynchronously: first see it held (or already signalled)
        if pid is not None:
            poll("the job held", lambda: stopped(pid) or "stopped by signal" in job_log(sweep_dir, job), sweep)
        yield
        if pid is not None:  # else signalled already (a slow start), and requeued
            seen = job_state(cluster, job)
            poll(f"{sig.name} from SLURM", lambda: released(pid, sig), sweep, timeout=timeout, seen=seen)
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def at_time_limit(cluster, tmp_path_factory):
    """The time-limit job (``timeout_min=1``, ``signal_delay_s=10``) and a thread that holds it until SLURM
    signals it, from the first test that asks for it: held or waiting for SLURM, it needs no CPU,
    so it runs alongside the requeue test. Yields the sweep directory, the sweep and the thread's
    future (the job, and the seconds from SIGUSR2 until it ran again)."""
    sweep_dir = tmp_path_factory.mktemp("time_limit") / "sweep"
    limit = ("hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=10")
    with ThreadPoolExecutor(1) as pool, cluster.sweep(sweep_dir.parent, sweep_dir, *CONFIG, *limit) as sweep:
        yield sweep_dir, sweep, pool.submit(watch_time_limit, cluster, sweep_dir, sweep)


def watch_time_limit(cluster: Cluster, sweep_dir: Path, sweep: Background) -> tuple[str, float]:
    job = poll("job under .submitit/", job_of(sweep_dir), sweep)
    poll("first checkpoint", lambda: list(sweep_dir.glob("*/checkpoint.pt")), sweep)
    with held_until(signal.SIGUSR2, cluster, job, sweep_dir, sweep):
        pass  # the time limit comes by itself
    signalled = time.monotonic()
    restarted = poll(
        "restart after the time limit", running_again(cluster, job, 1), sweep, seen=job_state(cluster, job)
    )
    return job, restarted - signalled


def test_a_job_at_its_time_limit_resumes_bitwise(cluster, at_time_limit, reference):
    """--time=1 --signal=USR2@10: SIGUSR2 before the limit; eqtrain checkpoints, submitit requeues, the job resumes.

    slurmctld checks about every 30 s and signals up to 30 s early, so the signal comes 20 to 50 s
    after the start. So that it meets the job mid-run on any machine, however fast, the job is held
    (SIGSTOP) after its first checkpoint until the signal arrives (slurmstepd sends SIGCONT with
    it): a job that would have run past its limit.
    """
    sweep_dir, sweep, watched = at_time_limit
    job, delay = watched.result(timeout=600)
    sweep.finish()
    print(f"time limit: the job ran again {delay:.1f} s after SIGUSR2")

    log = job_log(sweep_dir, job)
    assert f"stopped by signal {int(signal.SIGUSR2)}" in log, log[-3000:]
    assert "this job is timed-out" in log and "Requeued job" in log, log[-3000:]  # submitit's requeue
    assert int(cluster.job(job)["Restarts"]) >= 1
    assert_same_run(the_run(sweep_dir), reference())
