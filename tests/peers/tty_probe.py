"""What a recipient's |program can do to the terminal of whoever ran the
queue (tests/suite/tty.rs). Run from a .qmail line as the recipient; writes
key=value lines to the file named by argv[1]:

  tty_open=ok|ERRNO     open("/dev/tty")
  fdN_tty=0|1           isatty(N) for N in 0, 1, 2
  sti_WHERE=ok|ERRNO    TIOCSTI of a marker on /dev/tty and on each
                        terminal among fds 0-2
  sid=N                 our session id
Never fails: the delivery succeeds whatever the outcome."""
import errno
import fcntl
import os
import sys
import termios

MARKER = b"TERNPWN"
out = []


def sti(fd, where):
    try:
        for c in MARKER:
            fcntl.ioctl(fd, termios.TIOCSTI, bytes([c]))
        out.append(f"sti_{where}=ok")
    except OSError as e:
        out.append(f"sti_{where}={errno.errorcode.get(e.errno, e.errno)}")


try:
    fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    out.append("tty_open=ok")
    sti(fd, "devtty")
    os.close(fd)
except OSError as e:
    out.append(f"tty_open={errno.errorcode.get(e.errno, e.errno)}")
for n in (0, 1, 2):
    is_tty = os.isatty(n)
    out.append(f"fd{n}_tty={int(is_tty)}")
    if is_tty:
        sti(n, f"fd{n}")
out.append(f"sid={os.getsid(0)}")
with open(sys.argv[1], "a") as f:
    f.write("\n".join(out) + "\n")
