"""Runs a command as the leader of a new session whose controlling terminal
is a fresh pseudo-terminal (as a root shell runs `sendmail -q`).

usage: pty_run.py OUTPUT-FILE COMMAND [ARG...]

Prints `pid=<pid of the command, = its session id> tty=<slave path>` on
stdout at once, then copies everything the terminal shows (the master side)
into OUTPUT-FILE until the command has ended and nothing is left to read,
then prints `status=<wait status>`.
"""
import fcntl
import os
import pty
import select
import sys
import termios

out_path, argv = sys.argv[1], sys.argv[2:]
master, slave = pty.openpty()
name = os.ttyname(slave)
pid = os.fork()
if pid == 0:
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    os.execv(argv[0], argv)
os.close(slave)
print("pid=%d tty=%s" % (pid, name), flush=True)
seen = b""
status = None
eof = False
while status is None or not eof:
    r = []
    if not eof:
        r, _, _ = select.select([master], [], [], 0.2)
    if r:
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b""  # EIO: no process holds the terminal any more
        if data:
            seen += data
            continue
        eof = True
    if status is None:
        done, st = os.waitpid(pid, 0 if eof else os.WNOHANG)
        if done:
            status = st
    if status is not None and not r:
        # The command ended and nothing was waiting to be read.
        break
with open(out_path, "wb") as f:
    f.write(seen)
print("status=%d" % status, flush=True)
