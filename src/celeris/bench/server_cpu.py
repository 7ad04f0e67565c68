"""CPU time of the server's process tree over a run (psutil), for requests per CPU-second."""

from __future__ import annotations

from celeris.bench.config import LoadgenError, int_in
from celeris.errors import ConfigError


class ProcessTreeCPU:
    """CPU time of a process and all its descendants (psutil), for requests per CPU-second."""

    def __init__(self, pid: int) -> None:
        import psutil

        int_in("server pid", pid, 1, 2**31 - 1)
        try:
            self._root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            raise ConfigError(f"no process with id {pid} (the server's PID)") from None
        except psutil.AccessDenied:
            raise ConfigError(f"not allowed to read process {pid}'s CPU times") from None
        self.pid = pid

    def snapshot(self) -> dict[tuple[int, float], float]:
        """Return ``{(pid, create_time): user + system CPU seconds}`` of the live tree."""
        import psutil

        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.NoSuchProcess:
            raise LoadgenError(f"the server process {self.pid} is gone") from None
        out = {}
        for p in procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    out[(p.pid, p.create_time())] = float(t.user + t.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue  # exited between the listing and the read
        return out

    @staticmethod
    def delta(
        before: dict[tuple[int, float], float], after: dict[tuple[int, float], float]
    ) -> float:
        """CPU seconds spent between two snapshots by the processes alive at the second."""
        return sum(max(0.0, cpu - before.get(key, 0.0)) for key, cpu in after.items())
