"""Runs a command inside a new pseudo-terminal that is its controlling
terminal, as root's login shell would (tests/suite/tty.rs). Prints JSON:
status, the session id (the command's pid), what the command wrote to the
terminal, and what was left in the terminal's input queue (pushed there
with TIOCSTI by anyone: nobody reads it)."""
import fcntl
import json
import os
import select
import subprocess
import sys
import termios

master, slave = os.openpty()
attrs = termios.tcgetattr(slave)
attrs[3] &= ~termios.ICANON  # input readable without a newline
attrs[6][termios.VMIN] = 0
attrs[6][termios.VTIME] = 0
termios.tcsetattr(slave, termios.TCSANOW, attrs)


def make_controlling():
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


p = subprocess.Popen(sys.argv[1:], stdin=slave, stdout=slave, stderr=slave,
                     preexec_fn=make_controlling)
output = b""
while True:
    r, _, _ = select.select([master], [], [], 0.2)
    if r:
        try:
            output += os.read(master, 65536)
        except OSError:
            break
    elif p.poll() is not None:
        break
status = p.wait()
typed = b""
while True:
    try:
        chunk = os.read(slave, 4096)
    except BlockingIOError:
        break
    if not chunk:
        break
    typed += chunk
print(json.dumps({
    "status": status,
    "sid": p.pid,
    "output": output.decode("utf-8", "replace"),
    "typed": typed.decode("utf-8", "replace"),
}))
