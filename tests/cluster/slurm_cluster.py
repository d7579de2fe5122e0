"""A real one-node SLURM cluster for tests: munge, slurmctld and slurmd on this machine.

`SlurmCluster` installs Debian's SLURM packages where they are missing (only as root with
apt-get), writes a one-node configuration with two fake GPUs, starts the three daemons as
root without systemd or cgroups, and stops exactly the processes it started, by process
id. Everything it writes lives in its own temporary directory, except
`/etc/slurm/slurm.conf`: the snakemake SLURM executor's inner `srun` drops `SLURM_CONF`
from its environment, so the configuration must also be found at the default path. An
existing file there is moved aside and put back on stop.

    with SlurmCluster() as cluster:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env(), check=True)
        print(cluster.jobs())

Anything that keeps the cluster from starting raises `ClusterUnavailable` with the reason
(and the daemons' logs); the tests turn that into a skip, or into a failure when
`RAMANSEG_REQUIRE_SLURM=1`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

#: The Debian packages that make a one-node cluster, and a program each must provide.
PACKAGES = {
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "slurm-client": "sbatch",
    "munge": "munged",
}
#: Every program the harness and the snakemake executor call.
PROGRAMS = (
    "munged",
    "mungekey",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "scontrol",
    "scancel",
    "sinfo",
    "srun",
)
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
NODE = "ramanseg-node"
HEADER = "# One-node test cluster written by tests/cluster/slurm_cluster.py"
#: Longer than any test session: finished jobs stay visible to `squeue` and `scontrol`,
#: which is what the executor's `squeue` status queries need (it wants > 120 s).
MIN_JOB_AGE = 3600


#: Set to 1 (CI does) to make a cluster that cannot start a test failure, not a skip.
REQUIRE_ENV = "RAMANSEG_REQUIRE_SLURM"


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be installed or started here; the message says why."""


def missing_programs() -> list[str]:
    return [name for name in PROGRAMS if shutil.which(name) is None]


def install_slurm(timeout: float = 600) -> float:
    """Install the Debian packages if a program is missing; return the seconds spent."""
    if not missing_programs():
        return 0.0
    if os.geteuid() != 0:
        raise ClusterUnavailable(
            f"SLURM is not installed (missing: {', '.join(missing_programs())}) and "
            "installing it needs root"
        )
    if shutil.which("apt-get") is None:
        raise ClusterUnavailable(
            f"SLURM is not installed (missing: {', '.join(missing_programs())}) and "
            "there is no apt-get to install it"
        )
    start = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    commands = [
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ]
    for command in commands:
        try:
            result = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise ClusterUnavailable(f"`{' '.join(command)}` took over {timeout} s") from None
        if result.returncode != 0:
            raise ClusterUnavailable(
                f"`{' '.join(command)}` failed with exit code {result.returncode}:\n"
                + _tail(result.stdout + result.stderr)
            )
    if missing_programs():
        raise ClusterUnavailable(
            f"after installing {', '.join(PACKAGES)} still missing: {', '.join(missing_programs())}"
        )
    return time.monotonic() - start


def running_daemons() -> list[str]:
    """`pid name` of SLURM or munge daemons already running on this machine."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = (proc / "comm").read_text().strip()
        except OSError:
            continue
        if name in {"slurmctld", "slurmd", "slurmstepd", "munged"}:
            found.append(f"{proc.name} {name}")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_mb() -> int:
    """Memory SLURM may hand out: 90 % of the machine's."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * 0.9)
    raise ClusterUnavailable("cannot read MemTotal from /proc/meminfo")


def parse_records(text: str) -> list[dict[str, str]]:
    """Records of `scontrol show ... --oneliner`: one `Key=value ...` line each.

    A whitespace-separated token that does not start with `Key=` continues the previous
    value (values such as `Command` or `Reason` may contain blanks).
    """
    records = []
    key_re = re.compile(r"^([A-Za-z][A-Za-z0-9_/:.]*)=(.*)$")
    for line in text.splitlines():
        record: dict[str, str] = {}
        key = None
        for token in line.split():
            match = key_re.match(token)
            if match:
                key, value = match.groups()
                record[key] = value
            elif key is not None:
                record[key] += " " + token
        if record:
            records.append(record)
    return records


def _recover_stale_system_conf() -> None:
    """Undo what a killed earlier session left behind: our config in place of the user's."""
    try:
        stale = SYSTEM_CONF.read_text().startswith(HEADER)
    except OSError:
        return
    if not stale:
        return
    backups = sorted(SYSTEM_CONF.parent.glob("slurm.conf.ramanseg-backup-*"))
    if len(backups) == 1:
        backups[0].rename(SYSTEM_CONF)
    elif not backups:
        SYSTEM_CONF.unlink()


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


class SlurmCluster:
    """A one-node SLURM cluster with `cpus` CPUs and `gpus` fake GPUs.

    Partitions: `cpu` (the default) and `gpu`, both on the one node, so that tests can
    check where a job was sent. Use as a context manager, or call `start()` / `stop()`.
    """

    def __init__(self, cpus: int | None = None, gpus: int = 2, start_timeout: float = 60):
        self.cpus = cpus or os.cpu_count() or 1
        self.gpus = gpus
        self.start_timeout = start_timeout
        self.root: Path | None = None
        self.install_seconds = 0.0
        self._processes: dict[str, subprocess.Popen] = {}
        self._system_conf_backup: Path | None = None
        self._created_system_dir = False
        self._wrote_system_conf = False

    # -- configuration -----------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def _write_config(self) -> None:
        root = self.root
        for name in ("munge", "state", "spool", "dev"):
            (root / name).mkdir()
        # munged insists that every directory on the way to its socket be searchable by
        # all, and that its key be private.
        root.chmod(0o755)
        (root / "munge").chmod(0o755)
        subprocess.run(
            ["mungekey", "--create", "--keyfile", str(root / "munge" / "munge.key")],
            check=True,
            capture_output=True,
        )
        # Fake GPUs: character devices that behave like /dev/null (mknod NAME c 1 3).
        devices = []
        for index in range(self.gpus):
            device = root / "dev" / f"gpu{index}"
            os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
            devices.append(device)
        host = socket.gethostname().split(".")[0]
        lines = [
            HEADER,
            "ClusterName=ramanseg",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={root / 'munge' / 'munge.socket'}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            # No systemd, no cgroups: track processes by parent id, bind no tasks.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            # No slurmdbd: nothing is accounted, so `sacct` cannot answer; job records
            # stay in slurmctld for MinJobAge seconds, where `squeue` and `scontrol` see them.
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            f"MinJobAge={MIN_JOB_AGE}",
            "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            # The configured node wins over what slurmd detects (no drain on mismatch).
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "KillWait=5",
            "InactiveLimit=0",
            "GresTypes=gpu",
            f"NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={memory_mb()} Gres=gpu:{self.gpus} State=UNKNOWN",
            f"PartitionName=cpu Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName=gpu Nodes={NODE} Default=NO MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        # slurmd reads gres.conf from the directory of the slurm.conf it was given.
        gres = [f"NodeName={NODE} Name=gpu File={device}" for device in devices]
        (root / "gres.conf").write_text("\n".join(gres) + "\n")

    def _install_system_conf(self) -> None:
        _recover_stale_system_conf()
        if not SYSTEM_CONF.parent.exists():
            SYSTEM_CONF.parent.mkdir(parents=True)
            self._created_system_dir = True
        if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
            backup = SYSTEM_CONF.with_name(f"slurm.conf.ramanseg-backup-{os.getpid()}")
            SYSTEM_CONF.rename(backup)
            self._system_conf_backup = backup
        shutil.copyfile(self.conf, SYSTEM_CONF)
        self._wrote_system_conf = True

    def _restore_system_conf(self) -> None:
        if self._wrote_system_conf:
            SYSTEM_CONF.unlink(missing_ok=True)
            self._wrote_system_conf = False
        if self._system_conf_backup is not None:
            self._system_conf_backup.rename(SYSTEM_CONF)
            self._system_conf_backup = None
        if self._created_system_dir:
            try:
                SYSTEM_CONF.parent.rmdir()
            except OSError:
                pass
            self._created_system_dir = False

    # -- processes -----------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for SLURM client commands (the config at the default path)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
        env["SLURM_CONF"] = str(SYSTEM_CONF)
        env.update(extra)
        return env

    def _spawn(self, name: str, command: list[str]) -> None:
        # The child keeps its own copy of the log's file descriptor.
        with open(self.root / f"{name}.stdout", "wb") as log:
            self._processes[name] = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _check_alive(self) -> None:
        for name, process in self._processes.items():
            if process.poll() is not None:
                raise ClusterUnavailable(
                    f"{name} exited with code {process.returncode}\n{self.logs()}"
                )

    def command(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """Run a SLURM client command against this cluster; return its stdout."""
        result = subprocess.run(
            list(args), env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result.stdout

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        state = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                state = self.command("sinfo", "--noheader", "-N", "-o", "%N %T", check=False)
            except subprocess.TimeoutExpired:
                state = "sinfo timed out"
            if any(line.split()[1:] == ["idle"] for line in state.splitlines()):
                return
            time.sleep(0.5)
        raise ClusterUnavailable(
            f"the node did not become idle in {self.start_timeout} s (sinfo: {state.strip()})"
            f"\n{self.logs()}"
        )

    def start(self) -> SlurmCluster:
        if os.geteuid() != 0:
            raise ClusterUnavailable("starting SLURM daemons needs root")
        self.install_seconds = install_slurm()
        others = running_daemons()
        if others:
            raise ClusterUnavailable(
                "SLURM or munge daemons already run on this machine; not touching them: "
                + ", ".join(others)
            )
        self.root = Path(tempfile.mkdtemp(prefix="ramanseg-slurm-"))
        try:
            self._write_config()
            self._install_system_conf()
            munge = self.root / "munge"
            self._spawn(
                "munged",
                [
                    "munged",
                    "--foreground",
                    f"--socket={munge / 'munge.socket'}",
                    f"--key-file={munge / 'munge.key'}",
                    f"--pid-file={munge / 'munged.pid'}",
                    f"--seed-file={munge / 'munged.seed'}",
                    f"--log-file={munge / 'munged.log'}",
                ],
            )
            deadline = time.monotonic() + 10
            while not (munge / "munge.socket").exists():
                self._check_alive()
                if time.monotonic() > deadline:
                    raise ClusterUnavailable(f"munged made no socket in 10 s\n{self.logs()}")
                time.sleep(0.1)
            self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
            self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", NODE])
            self._wait_idle()
        except (OSError, subprocess.SubprocessError) as error:
            # mknod refused in a container, a daemon binary that cannot run, ...
            self.stop()
            raise ClusterUnavailable(f"{error!r}\n{self.logs()}") from error
        except BaseException:
            self.stop()
            raise
        return self

    def _cancel_all_jobs(self, timeout: float = 30) -> None:
        """Cancel this cluster's unfinished jobs and wait until their processes are gone."""
        if "slurmctld" not in self._processes or self._processes["slurmctld"].poll() is not None:
            return
        try:
            ids = self.command("squeue", "--noheader", "-o", "%i", check=False).split()
            if ids:
                self.command("scancel", *ids, check=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                states = self.command("squeue", "--noheader", "-o", "%T", check=False).split()
                if not {"RUNNING", "PENDING", "COMPLETING", "CONFIGURING"} & set(states):
                    return
                time.sleep(0.5)
        except (subprocess.TimeoutExpired, OSError):
            pass

    def _stop_process(self, name: str, timeout: float = 15) -> None:
        process = self._processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def stop(self) -> None:
        """Cancel remaining jobs, stop the daemons we started (by pid), restore files."""
        self._cancel_all_jobs()
        for name in ("slurmd", "slurmctld", "munged"):
            self._stop_process(name)
        self._restore_system_conf()

    def cleanup(self) -> None:
        """Remove the cluster's directory (after `stop`)."""
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self.cleanup()

    # -- inspection ----------------------------------------------------------------

    def jobs(self, name: str | None = None) -> list[dict[str, str]]:
        """`scontrol show job` records (kept for MinJobAge), optionally of one job name."""
        out = self.command("scontrol", "show", "job", "--oneliner", "--details", check=False)
        records = parse_records(out)
        if name is not None:
            records = [record for record in records if record.get("JobName") == name]
        return records

    def logs(self, lines: int = 40) -> str:
        """The tails of the daemons' logs, for failure messages."""
        if self.root is None:
            return "(no cluster directory)"
        parts = []
        for path in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.stdout")):
            text = path.read_text(errors="replace")
            parts.append(f"---- {path} (last {lines} lines)\n{_tail(text, lines)}")
        return "\n".join(parts)


def start_or_skip(cluster: SlurmCluster) -> SlurmCluster:
    """Start `cluster`; if it cannot start, skip the test, or fail it under REQUIRE_ENV=1."""
    try:
        return cluster.start()
    except ClusterUnavailable as error:
        cluster.cleanup()
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but no SLURM test cluster: {error}", pytrace=False)
        pytest.skip(f"no SLURM test cluster: {error}")
