"""The local engine survives a worker process that dies on one item."""

from __future__ import annotations

import os
import signal

from pixdedup.engines.local import map_unordered

CRASH_ON = {7, 23}


def square_or_die(x: int) -> int:
    if x in CRASH_ON:
        os.kill(os.getpid(), signal.SIGSEGV)  # what a decoder bug does to the process
    return x * x


def crashed(x: int, reason: str) -> int:
    assert "worker process died" in reason
    return -x


def test_a_dying_worker_costs_only_its_item() -> None:
    got = sorted(map_unordered(square_or_die, range(60), workers=2, chunk=3, on_crash=crashed))
    expected = sorted(-x if x in CRASH_ON else x * x for x in range(60))
    assert got == expected  # every item exactly once, the crashing ones marked


def test_without_recovery_the_error_is_raised() -> None:
    import concurrent.futures.process as cfp

    try:
        list(map_unordered(square_or_die, range(10), workers=2, chunk=2))
    except cfp.BrokenProcessPool:
        return
    raise AssertionError("a dead worker went unnoticed")


def always_die(x: int) -> int:
    os.kill(os.getpid(), signal.SIGSEGV)
    return x


def test_workers_that_never_work_stop_the_run() -> None:
    """A pool that has never finished an item is broken as a whole (a worker that
    cannot start): that is an error, not a crash of every single file."""
    import concurrent.futures.process as cfp

    try:
        list(map_unordered(always_die, range(10), workers=2, chunk=2, on_crash=crashed))
    except cfp.BrokenProcessPool:
        return
    raise AssertionError("every item was reported as crashed")


def worker_pid(_x: int) -> int:
    return os.getpid()


def test_one_pool_serves_every_stage_until_the_engine_closes() -> None:
    from pixdedup.engines.local import LocalEngine

    engine = LocalEngine(2)
    try:
        extract = set(engine.map_cpu(worker_pid, range(40), chunk=1))
        with engine.cpu_pool() as pool:  # the verify stage: the same workers, still running
            verify = set(pool.map(worker_pid, range(40), chunk=1))
        again = set(engine.map_cpu(worker_pid, range(40), chunk=1))
        workers = extract | verify | again  # the same two processes all along
        assert os.getpid() not in workers and 1 <= len(workers) <= 2
        # a crash in one stage costs only its item; the next stage gets a fresh pool
        got = sorted(engine.map_cpu(square_or_die, range(10), chunk=1, on_crash=crashed))
        assert got == sorted(-x if x in CRASH_ON else x * x for x in range(10))
        last = set(engine.map_cpu(worker_pid, range(40), chunk=1))
        assert last and not last & workers
    finally:
        engine.close()
    for pid in last:  # close stopped the workers
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        with open(f"/proc/{pid}/stat") as fh:  # a zombie awaiting its reaper is stopped too
            assert fh.read().split()[2] == "Z"


def first_image_imports(_x: int) -> list[str]:
    """What a worker would import on its first image, that it has not got yet."""
    import sys

    return [m for m in ("numpy.ma", "pillow_heif", "PIL.WebPImagePlugin", "PIL.PngImagePlugin")
            if m not in sys.modules]


def test_workers_start_with_the_first_image_imports_done() -> None:
    """The forkserver loads them once (``engines.preload``): on 100 photos of 3 MP a
    new pool's extraction went from about 110 to 170 images/s on two cores.  In a
    process of its own: the forkserver is one per process, and another test may have
    started this one's without the preload."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("from pixdedup.engines.local import map_unordered\n"
            "from tests.unit.test_engine import first_image_imports\n"
            "print(list(map_unordered(first_image_imports, range(4), workers=2, chunk=1)))\n")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[[], [], [], []]"
