"""A real single-node Slurm (munged, slurmctld, slurmd) in a temporary folder, for the tests of `tsnpipe slurm`.

Everything it needs lives under one folder: its own munge key and socket, a minimal slurm.conf on localhost
(proctrack/linuxproc, task/none, select/cons_tres, no accounting database, so job states come from scontrol),
state and spool folders, and free ports, so it disturbs no Slurm or munge already on the machine. The daemons
run as the current user; `stop()` ends the three processes it started, by their ids.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel")


def missing_binaries() -> list[str]:
    return [name for name in DAEMONS if not (shutil.which(name) or Path("/usr/sbin", name).exists())]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


CONF = """\
ClusterName=tsnpipetest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmdParameters=config_overrides
MinJobAge=600
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


class SlurmCluster:
    def __init__(self, root: Path, cpus: int = 4):
        self.root = Path(root)
        self.cpus = cpus
        self.procs: list[subprocess.Popen] = []
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 30.0) -> "SlurmCluster":
        root = self.root
        for folder in ("state", "spool", "munge"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / "munge").chmod(0o700)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        munge_socket = root / "munge" / "munge.socket"
        ctld_port, d_port = _free_ports(2)
        host = socket.gethostname().split(".")[0]
        import getpass

        self.conf.write_text(CONF.format(host=host, ctld_port=ctld_port, d_port=d_port, user=getpass.getuser(),
                                         munge_socket=munge_socket, root=root, cpus=self.cpus))
        self._spawn([_binary("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={munge_socket}",
                     f"--pid-file={root / 'munge' / 'munged.pid'}", f"--log-file={root / 'munge' / 'munged.log'}",
                     f"--seed-file={root / 'munge' / 'munged.seed'}"], "munged")
        self._wait(lambda: munge_socket.exists(), timeout, "munged did not open its socket")
        self._spawn([_binary("slurmctld"), "-D", "-i", "-f", str(self.conf)], "slurmctld")
        self._spawn([_binary("slurmd"), "-D", "-f", str(self.conf)], "slurmd")
        self._wait(self._node_idle, timeout, "the node did not come up idle")
        return self

    def _spawn(self, command: list[str], name: str) -> None:
        log = open(self.root / f"{name}.out", "ab")
        self.procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))

    def _wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{what}: {proc.args[0]} exited with {proc.returncode}; see {self.root}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} in {timeout:.0f} s; see the logs in {self.root}")
            time.sleep(0.3)

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-o", "%T", check=False).stdout
        return out.strip().startswith("idle")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, env=self.env, check=check, timeout=60)

    def job(self, job_id: str) -> dict:
        """scontrol's fields of one job (an array task as JOB_TASK), e.g. JobState, ExitCode, Restarts."""
        out = self.run("scontrol", "show", "job", "-o", job_id, check=False).stdout
        fields = {}
        for word in out.split():
            key, _, value = word.partition("=")
            fields.setdefault(key, value)
        return fields

    def array_states(self, job_id: str) -> dict[str, str]:
        out = self.run("scontrol", "show", "job", "-o", job_id, check=False).stdout
        states = {}
        for line in out.splitlines():
            fields = dict(word.partition("=")[::2] for word in line.split() if "=" in word)
            states[fields.get("ArrayTaskId", fields.get("JobId"))] = fields.get("JobState")
        return states

    def stop(self) -> None:
        self.run("scancel", "--user", os.environ.get("USER", "root"), check=False)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
