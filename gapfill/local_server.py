"""A server run as a child process on loopback, for what needs one running (the API and
browser tests, bench/app.py, bench/load.py): a free port, waiting until it answers, its
memory, stopping it."""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path


class ServerDidNotStart(RuntimeError):
    """The process exited, or did not answer in time; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float, log_path: Path | None = None) -> float:
    """Seconds until `url` answers 200. Raises `ServerDidNotStart` (with the log's tail) when
    the process exits first or `timeout_s` passes; the process is then left to the caller."""
    start = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:  # not listening yet, or an error status
            pass
        if process.poll() is not None or time.monotonic() - start > timeout_s:
            log = log_path.read_text(errors="replace")[-3000:] if log_path is not None and log_path.exists() else ""
            raise ServerDidNotStart(f"the server for {url} did not start (exit code {process.poll()}); "
                                    f"its log ends:\n{log}")
        time.sleep(0.2)


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (the highest so far) of a process, in MiB (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)  # the kernel reports kB
    return fields


def stop(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """Terminate, and kill when it does not end within `timeout_s`."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
