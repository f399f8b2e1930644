"""A throw-away single-node Slurm 22.05 cluster on loopback for the tests (shared/ENVIRONMENT.md "Slurm 22.05 on
one machine"): its own slurm.conf, ports, spool and state directories under the test's work directory, and
exactly its own slurmctld and slurmd, stopped by PID at the end. Other Slurm daemons on the machine (another
checkout's tests) are never touched: everything goes through SLURM_CONF pointing at this cluster's file.

    with SlurmCluster(workdir, max_array_size=4) as cluster:
        env = cluster.env          # SLURM_CONF=... for sbatch/squeue/scontrol and for the jobs themselves
"""
import os
import shutil
import signal
import socket
import subprocess
import time


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    def __init__(self, workdir, max_array_size=4, cpus=2):
        self.dir = os.path.abspath(workdir)
        self.max_array_size, self.cpus = max_array_size, cpus
        self.procs = []

    def ensure_installed(self, repo):
        """Slurm's daemons come from Debian's slurm-wlm: install it with the project's setup script if missing."""
        if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("sbatch"):
            return
        q = subprocess.run([os.path.join(repo, "scripts", "setup.sh"), "--slurm"], capture_output=True, text=True)
        if q.returncode != 0 or not shutil.which("slurmctld"):
            raise RuntimeError("Slurm is not installed and scripts/setup.sh --slurm failed:\n%s%s" % (q.stdout, q.stderr))

    def write_conf(self):
        os.makedirs(self.dir, exist_ok=True)
        for d in ("state", "spool"):
            shutil.rmtree(os.path.join(self.dir, d), ignore_errors=True)
            os.makedirs(os.path.join(self.dir, d))
        ctld, slurmd = free_port(), free_port()
        while slurmd == ctld:
            slurmd = free_port()
        d = self.dir
        conf = """# written by tests/slurm/slurm_cluster.py: a single-node test cluster on loopback
ClusterName=sprytest%(ctld)d
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=%(ctld)d
SlurmdPort=%(slurmd)d
AuthType=auth/none
CredType=cred/none
# The requeue hold is cred_expire + 1 s (120 s by default); 5 s keeps the preemption test short.
AuthInfo=cred_expire=5
SlurmUser=root
SlurmdUser=root
StateSaveLocation=%(d)s/state
SlurmdSpoolDir=%(d)s/spool
SlurmctldPidFile=%(d)s/slurmctld.pid
SlurmdPidFile=%(d)s/slurmd.pid
SlurmctldLogFile=%(d)s/slurmctld.log
SlurmdLogFile=%(d)s/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# sched_interval=2: a requeued task is started within ~2 s of its hold ending (the default is 60 s).
SchedulerParameters=batch_sched_delay=0,sched_interval=2
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MaxArraySize=%(mas)d
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=%(cpus)d Boards=1 SocketsPerBoard=1 CoresPerSocket=%(cpus)d ThreadsPerCore=1 RealMemory=20000
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""" % {"ctld": ctld, "slurmd": slurmd, "d": d, "mas": self.max_array_size, "cpus": self.cpus}
        self.conf = os.path.join(d, "slurm.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.env = dict(os.environ, SLURM_CONF=self.conf)

    def start(self):
        self.write_conf()
        for name, cmd in (("slurmctld", ["slurmctld", "-D", "-c", "-f", self.conf]),
                          ("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", self.conf])):
            out = open(os.path.join(self.dir, name + ".out"), "w")
            self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                               start_new_session=True))
        deadline = time.time() + 30
        while time.time() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError("%s exited %d at start; see %s" % (p.args[0], p.returncode, self.dir))
            q = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env)
            if q.returncode == 0 and q.stdout.strip() == "idle":
                return
            time.sleep(0.3)
        raise RuntimeError("the test cluster did not come up within 30 s; see %s" % self.dir)

    def queue(self):
        q = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T %r"], capture_output=True, text=True, env=self.env)
        if q.returncode != 0:
            raise RuntimeError("squeue failed: %s" % q.stderr)
        return [ln.split() for ln in q.stdout.splitlines() if ln.strip()]

    def wait_empty(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.queue():
                return True
            time.sleep(0.5)
        return False

    def stop(self):
        """Cancel whatever is left in this cluster's queue, then stop exactly the daemons started here."""
        if self.procs and all(p.poll() is None for p in self.procs):
            subprocess.run(["scancel", "--full", "--partition=debug"], capture_output=True, env=self.env)
            self.wait_empty(30)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = []

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
