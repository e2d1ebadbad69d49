"""PID 1 of a sandbox run, started by `creditgym.envs.tooluse.sandbox` inside ``unshare``.

It runs as root in fresh network, mount and PID namespaces and:

1. builds a new root file system on a tmpfs: read-only bind mounts of the system directories and
   of the Python installation (at their usual paths), ``/dev/null`` and friends, a fresh
   ``/proc``, and a writable, size-limited tmpfs at ``/sandbox`` holding the code as ``main.py``;
2. chroots into it and makes the new root read-only, so the only writable place is ``/sandbox``;
3. forks the user's program, which drops to an unprivileged uid of its own, applies the resource
   limits and execs Python on ``main.py``;
4. reaps orphans until that program ends, then exits with its status (128 + signal when it was
   killed). Leaving kills every process still running in the PID namespace.

Arguments: ``<new root dir> <code file> <config JSON>``. It imports only the standard library.
"""

import ctypes
import json
import os
import resource
import shutil
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
WORKDIR = "/sandbox"
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source, target, fstype, flags, data=None):
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    if _libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _bind_ro(path, root):
    """Mirror host `path` (a directory, file or symlink) read-only at the same place under root."""
    target = root + path
    if os.path.islink(path):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            os.symlink(os.readlink(path), target)
        return
    if not os.path.exists(path) or os.path.ismount(target):
        return
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(path, target, None, MS_BIND | MS_REC)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def _build_root(root, code_file, config):
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path in config["ro_paths"]:
        _bind_ro(path, root)
    for dev in DEVICES:
        if os.path.exists(dev):
            target = root + dev
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
            _mount(dev, target, None, MS_BIND)
    os.makedirs(root + "/proc", exist_ok=True)
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(root + "/tmp", exist_ok=True)
    work = root + WORKDIR
    os.makedirs(work)
    uid = int(config["uid"])
    opts = f"size={config['disk_mb']}m,mode=0700,uid={uid},gid={uid}"
    _mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, opts)
    shutil.copyfile(code_file, work + "/main.py")
    os.chown(work + "/main.py", uid, uid)
    os.chroot(root)
    os.chdir(WORKDIR)
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _exec_user_code(config):
    uid = int(config["uid"])
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    mem = int(config["memory_mb"]) * 1024 * 1024
    cpu = int(config["cpu_s"])
    fsize = int(config["file_mb"]) * 1024 * 1024
    nproc = int(config["processes"])
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": WORKDIR,
        "TMPDIR": WORKDIR,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    python = config["python"]
    os.execve(python, [python, "-I", "main.py"], env)


def main():
    root, code_file, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    try:
        _build_root(root, code_file, config)
    except OSError as exc:
        sys.stderr.write(f"sandbox setup failed: {exc}\n")
        sys.exit(125)
    pid = os.fork()
    if pid == 0:
        try:
            _exec_user_code(config)
        except BaseException as exc:  # noqa: BLE001 - report any failure before exec, then leave
            os.write(2, f"sandbox setup failed: {exc!r}\n".encode())
            os._exit(125)
    # Reap orphans until the user's program ends; leaving then kills whatever it left running.
    while True:
        child, status = os.wait()
        if child == pid:
            break
    if os.WIFSIGNALED(status):
        sys.exit(128 + os.WTERMSIG(status))
    sys.exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
