#!/usr/bin/python3
"""Compiles the repl sandbox's seccomp filter with libseccomp (Debian: python3-seccomp).

Usage: seccomp-filter.py OUTPUT_FILE. Writes the BPF program bwrap loads with `--seccomp FD`.
Everything is allowed except what lets code in a repl leave or weaken its sandbox, or reach
kernel surfaces a development box never needs. ptrace stays allowed: the pid namespace and the
per-repl uid already confine it to the repl's own processes, and gdb/strace should work.
"""
import errno
import sys

import seccomp

EPERM = seccomp.ERRNO(errno.EPERM)

DENIED = [
    # Namespaces and mounts: no way to build a new view of the system.
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # Kernel keyrings are not namespaced.
    "keyctl", "add_key", "request_key",
    # Large kernel attack surfaces.
    "bpf", "perf_event_open", "userfaultfd",
    # Host administration.
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "acct", "syslog", "iopl", "ioperm",
    # File handles bypass path-based confinement.
    "open_by_handle_at", "name_to_handle_at",
    # The clock is shared by every repl.
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
]

CLONE_NAMESPACE_FLAGS = [
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
]

TIOCSTI = 0x5412
TIOCLINUX = 0x541C


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: seccomp-filter.py OUTPUT_FILE")
    # Other architectures (i386 int 0x80, x32) get the default bad-arch action: kill.
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED:
        try:
            f.add_rule(EPERM, name)
        except (RuntimeError, ValueError):
            # A syscall this architecture does not have (iopl on arm64...) cannot be called.
            pass
    for flag in CLONE_NAMESPACE_FLAGS:
        # clone's flags are its first argument on x86_64 (and every architecture we run on).
        f.add_rule(EPERM, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, which seccomp cannot read: ENOSYS makes libc fall back to clone.
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for request in (TIOCSTI, TIOCLINUX):
        # The kernel reads only the low 32 bits of the request: mask so high bits cannot smuggle it past.
        f.add_rule(EPERM, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
    with open(sys.argv[1], "wb") as out:
        f.export_bpf(out)


if __name__ == "__main__":
    main()
