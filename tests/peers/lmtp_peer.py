#!/usr/bin/python3
"""A third-party LMTP server (RFC 2033) for Tern's LMTP tests.

aiosmtpd's LMTP class (Debian's python3-aiosmtpd) on a TCP address or a
Unix socket, answering after the message once per accepted recipient, in
order, as the local part says:

  temp...     "451 4.2.0 <addr> peer says: mailbox busy" the first time
              that address is seen after DATA, "250" afterwards
  perm...     "550 5.1.1 <addr> peer says: no such user" after DATA
  norcpt...   "550 5.1.1" already at RCPT TO
  anything    "250 2.0.0 <addr> peer says: saved"

Records in a directory:

  DIR/ready          "tcp HOST PORT" or "unix PATH" once listening (rename)
  DIR/connections    one line per connection: "<n>"
  DIR/log            one line per command and per reply after DATA
  DIR/msg-<k>.eml    the content of each transaction that reached the
                     end of data (CRLF as received, dots unstuffed)
  DIR/msg-<k>.json   {"conn", "mail_from", "rcpt_tos", "delivered",
                     "tls"}: "delivered" lists the recipients answered 250;
                     written after the .eml file (rename)

Options:
  --host H --port P  listen on TCP (P 0: a free port)
  --unix PATH        listen on a Unix socket (mode 0666)
  --tls CERT KEY     offer STARTTLS (TCP)
  --short N          the first transaction that reaches the end of data
                     gets only its first N replies, then the connection
                     is cut (a server that died while delivering)

Exit status: 0 on SIGTERM; 3 when the address cannot be bound.
"""

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys

from aiosmtpd.lmtp import LMTP

ap = argparse.ArgumentParser()
ap.add_argument("--host")
ap.add_argument("--port", type=int, default=0)
ap.add_argument("--unix")
ap.add_argument("--dir", required=True)
ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
ap.add_argument("--short", type=int, default=-1)
args = ap.parse_args()

state = {"conns": 0, "msgs": 0, "short": args.short}
seen_temp = set()


def log(line):
    with open(os.path.join(args.dir, "log"), "a") as f:
        f.write(line + "\n")


def write_atomic(name, data):
    path = os.path.join(args.dir, name)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.rename(path + ".tmp", path)


def local(addr):
    return addr.split("@", 1)[0].lower()


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, options):
        log(f"conn={session.conn} RCPT TO:<{address}>")
        if local(address).startswith("norcpt"):
            return f"550 5.1.1 <{address}> peer says: refused at RCPT"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        replies = []
        delivered = []
        for a in envelope.rcpt_tos:
            lp = local(a)
            if lp.startswith("temp") and a.lower() not in seen_temp:
                seen_temp.add(a.lower())
                replies.append(f"451 4.2.0 <{a}> peer says: mailbox busy")
            elif lp.startswith("perm"):
                replies.append(f"550 5.1.1 <{a}> peer says: no such user")
            else:
                replies.append(f"250 2.0.0 <{a}> peer says: saved")
                delivered.append(a)
        short = state["short"]
        if short >= 0:
            state["short"] = -1
            replies = replies[:short]
            delivered = [a for a, r in zip(envelope.rcpt_tos, replies) if r.startswith("250")]
        state["msgs"] += 1
        k = state["msgs"]
        write_atomic(f"msg-{k}.eml", envelope.original_content)
        meta = {
            "conn": session.conn,
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "delivered": delivered,
            "tls": session.ssl is not None,
        }
        write_atomic(f"msg-{k}.json", json.dumps(meta).encode())
        for r in replies:
            log(f"conn={session.conn} reply {r}")
        if short >= 0:
            for r in replies:
                server._writer.write(r.encode() + b"\r\n")
            await server._writer.drain()
            log(f"conn={session.conn} cut after {short} replies")
            server.transport.abort()
            raise asyncio.CancelledError()
        # aiosmtpd sends the returned text followed by CRLF: several reply
        # lines joined by CRLF are LMTP's one reply per recipient
        return "\r\n".join(replies)


class Peer(LMTP):
    def connection_made(self, transport):
        fresh = self._original_transport is None
        super().connection_made(transport)
        if fresh:
            state["conns"] += 1
            self.session.conn = state["conns"]
            with open(os.path.join(args.dir, "connections"), "a") as f:
                f.write(f"{self.session.conn}\n")
        else:
            self.session.conn = self._conn_before_tls

    async def smtp_STARTTLS(self, arg):
        self._conn_before_tls = self.session.conn
        log(f"conn={self.session.conn} STARTTLS")
        await super().smtp_STARTTLS(arg)


async def main():
    tls_context = None
    if args.tls:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.tls[0], args.tls[1])
    loop = asyncio.get_running_loop()
    handler = Handler()

    def factory():
        return Peer(handler, hostname="store.test", tls_context=tls_context, timeout=60)

    try:
        if args.unix:
            server = await loop.create_unix_server(factory, args.unix)
            os.chmod(args.unix, 0o666)
            ready = f"unix {args.unix}\n"
        else:
            server = await loop.create_server(factory, args.host, args.port)
            port = server.sockets[0].getsockname()[1]
            ready = f"tcp {args.host} {port}\n"
    except OSError as e:
        print(f"lmtp_peer: cannot listen: {e}", file=sys.stderr)
        sys.exit(3)
    write_atomic("ready", ready.encode())
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop
    server.close()


asyncio.run(main())
