#!/usr/bin/python3
"""A third-party SMTP server for Tern's remote-delivery tests.

aiosmtpd (Debian's python3-aiosmtpd) on one address, with behaviours chosen
by arguments, recording what it receives in a directory:

  DIR/ready          "HOST PORT" once listening (written by rename)
  DIR/connections    one line per TCP connection: "<n> <peer address>"
  DIR/log            one line per command and per behaviour taken
  DIR/msg-<k>.json   one per accepted message: {"conn", "mail_from",
                     "mail_options", "rcpt_tos", "tls", "tls_version",
                     "size"}
  DIR/msg-<k>.eml    its content exactly as aiosmtpd hands it over: CRLF
                     line ends as received, leading dots unstuffed
                     (RFC 5321 4.5.2); the .json file is renamed into place
                     after the .eml file, so a .json file means "complete"

Behaviours:
  --tempfail N       the first N transactions get "451 4.3.0" at MAIL FROM
  --reject ADDR      RCPT TO:<ADDR> gets "550 5.1.1 <ADDR>: ..." (repeatable)
  --drop-in-data N   the first N DATA commands: after 354 and the first
                     data bytes, the connection is closed without a reply
                     (nothing recorded)
  --tls CERT KEY     offer STARTTLS with that certificate and key
  --bad-starttls     with --tls: STARTTLS is offered and answered 220, then
                     the server sends a TLS handshake_failure alert and
                     closes (as an old server whose ciphers the client
                     refuses would)
  --size N           announce and enforce SIZE N (default 33554432)
  --no-smtputf8      do not offer SMTPUTF8 (aiosmtpd then refuses it)

Exit status: 0 on SIGTERM; 3 when the address cannot be bound.
"""

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP

ap = argparse.ArgumentParser()
ap.add_argument("--host", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--dir", required=True)
ap.add_argument("--tempfail", type=int, default=0)
ap.add_argument("--reject", action="append", default=[])
ap.add_argument("--drop-in-data", type=int, default=0)
ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
ap.add_argument("--bad-starttls", action="store_true")
ap.add_argument("--size", type=int, default=33554432)
ap.add_argument("--no-smtputf8", action="store_true")
args = ap.parse_args()

state = {
    "conns": 0,
    "msgs": 0,
    "tempfail": args.tempfail,
    "drop": args.drop_in_data,
}
rejected = {a.lower() for a in args.reject}


def log(line):
    with open(os.path.join(args.dir, "log"), "a") as f:
        f.write(line + "\n")


def write_atomic(name, data):
    path = os.path.join(args.dir, name)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.rename(path + ".tmp", path)


class Handler:
    async def handle_MAIL(self, server, session, envelope, address, options):
        log(f"conn={session.conn} MAIL FROM:<{address}> {' '.join(options)}")
        if state["tempfail"] > 0:
            state["tempfail"] -= 1
            log(f"conn={session.conn} tempfail")
            return "451 4.3.0 peer says: try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        log(f"conn={session.conn} RCPT TO:<{address}>")
        if address.lower() in rejected:
            return f"550 5.1.1 <{address}>: peer says: no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        state["msgs"] += 1
        k = state["msgs"]
        tls = session.ssl is not None
        version = None
        if tls:
            obj = server.transport.get_extra_info("ssl_object")
            version = obj.version() if obj is not None else None
        content = envelope.original_content
        write_atomic(f"msg-{k}.eml", content)
        meta = {
            "conn": session.conn,
            "mail_from": envelope.mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": tls,
            "tls_version": version,
            "size": len(content),
        }
        write_atomic(f"msg-{k}.json", json.dumps(meta).encode())
        log(f"conn={session.conn} accepted msg-{k} rcpts={len(envelope.rcpt_tos)} tls={tls}")
        return "250 2.0.0 OK peer queued as msg-%d" % k


# A TLS 1.2 record: alert, level fatal (2), handshake_failure (40).
HANDSHAKE_FAILURE = b"\x15\x03\x03\x00\x02\x02\x28"


class Peer(SMTP):
    def connection_made(self, transport):
        fresh = self._original_transport is None
        super().connection_made(transport)
        if fresh:
            state["conns"] += 1
            self.session.conn = state["conns"]
            peer = transport.get_extra_info("peername")
            with open(os.path.join(args.dir, "connections"), "a") as f:
                f.write(f"{self.session.conn} {peer[0]}\n")
        else:
            # STARTTLS made a new Session: keep the connection number.
            self.session.conn = self._conn_before_tls

    async def smtp_STARTTLS(self, arg):
        self._conn_before_tls = self.session.conn
        log(f"conn={self.session.conn} STARTTLS")
        if not args.bad_starttls:
            await super().smtp_STARTTLS(arg)
            log(f"conn={self.session.conn} tls established")
            return
        await self.push("220 Ready to start TLS")
        try:
            await asyncio.wait_for(self._reader.read(4096), 10)
        except Exception:
            pass
        self._writer.write(HANDSHAKE_FAILURE)
        log(f"conn={self.session.conn} bad starttls: alert sent, closing")
        self.transport.close()
        raise asyncio.CancelledError()

    async def smtp_DATA(self, arg):
        if state["drop"] > 0 and self.envelope.rcpt_tos and not arg:
            state["drop"] -= 1
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            try:
                await asyncio.wait_for(self._reader.read(1), 30)
            except Exception:
                pass
            log(f"conn={self.session.conn} dropped in DATA")
            # abort(): no reply, buffers dropped; and stop reading commands.
            self.transport.abort()
            raise asyncio.CancelledError()
        await super().smtp_DATA(arg)


async def main():
    tls_context = None
    if args.tls:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.tls[0], args.tls[1])
    loop = asyncio.get_running_loop()
    handler = Handler()

    def factory():
        return Peer(
            handler,
            hostname="peer.test",
            tls_context=tls_context,
            enable_SMTPUTF8=not args.no_smtputf8,
            data_size_limit=args.size,
            timeout=60,
        )

    try:
        server = await loop.create_server(factory, args.host, args.port)
    except OSError as e:
        print(f"smtp_peer: cannot listen on {args.host} port {args.port}: {e}", file=sys.stderr)
        sys.exit(3)
    port = server.sockets[0].getsockname()[1]
    write_atomic("ready", f"{args.host} {port}\n".encode())
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop
    server.close()


asyncio.run(main())
