#!/usr/bin/env python3
"""SMTP sink with fault injection, for the end-to-end test suite.

Run:  python3 tests/smtp/smtp_sink.py --port 0 --dir DIR [--control-port 0]

On start it prints exactly one JSON line to stdout and flushes it:
    {"smtp_port": N, "control_port": M}
Everything else (logs) goes to stderr.

Every accepted message is stored atomically (temp file + rename, before the
250 reply is sent) in DIR as  NNNNNN-<uuid4>.eml , NNNNNN being a monotonic
counter zero-padded to 6 digits.  File content (bytes, CRLF line ends):

    X-Sink-Mail-From: <envelope sender, or "<>" for the null sender>
    X-Sink-Rcpt-To: <rcpt1>, <rcpt2>, ...   (accepted recipients, in order)
    X-Sink-Received-At: 2025-01-01T12:00:00.123456Z
    [X-Sink-Auth-User: <login>]              (only if the client used AUTH)
    <DATA content exactly as received, dot-unstuffed>

Fault injection and counters: a small HTTP/1.1 JSON API on the control port;
see tests/smtp/README.md (GET /state, POST /mode, POST /reset, GET /messages).
Requires aiosmtpd 1.4.6 (tests/smtp/requirements.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime
import json
import logging
import os
import re
import signal
import socket
import ssl
import struct
import sys
import threading
import uuid

from aiosmtpd.smtp import SMTP

log = logging.getLogger("smtp_sink")

# Default reply texts for injected codes (an explicit *_message overrides them).
DEFAULT_TEXT = {
    421: "4.3.2 Service not available, closing transmission channel (injected)",
    450: "4.2.1 Mailbox temporarily unavailable (injected)",
    451: "4.3.0 Local error in processing, try again later (injected)",
    452: "4.3.1 Insufficient system storage (injected)",
    550: "5.1.1 Mailbox unavailable (injected)",
    551: "5.1.6 User not local (injected)",
    552: "5.3.4 Message size exceeds fixed maximum (injected)",
    553: "5.1.3 Mailbox name not allowed (injected)",
    554: "5.7.1 Transaction failed (injected)",
}

MODE_KEYS = {
    "delay_ms",
    "data_code",
    "data_message",
    "fail_times",
    "rcpt_code",
    "rcpt_message",
    "rcpt_fail_times",
    "connect_code",
    "connect_message",
    "connect_fail_times",
    "reset_on_connect_times",
    "drop_after_data",
    "store_then_drop",
    "per_recipient",
    "per_recipient_exact",
}

NAME_RE = re.compile(r"^(\d{6,})-[0-9a-fA-F-]{36}\.eml$")


def reply_for(code: int, message: str | None) -> str:
    if message:
        text = message
    else:
        text = DEFAULT_TEXT.get(code) or (
            "4.0.0 Temporary failure (injected)" if code < 500 else "5.0.0 Permanent failure (injected)"
        )
    # One line only: never let a message inject extra reply lines.
    text = text.replace("\r", " ").replace("\n", " ")
    return f"{code} {text}"


def parse_reply(value, what: str) -> str:
    """A per-recipient value: an int code, or a string "CODE text"."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a code (int) or \"CODE text\" string")
    if isinstance(value, int):
        return reply_for(check_code(value, what), None)
    if isinstance(value, str):
        m = re.match(r"^\s*(\d{3})(?:[ -](.*))?$", value)
        if not m:
            raise ValueError(f"{what}: expected \"CODE text\", got {value!r}")
        return reply_for(check_code(int(m.group(1)), what), (m.group(2) or "").strip() or None)
    raise ValueError(f"{what}: expected a code (int) or \"CODE text\" string")


def check_code(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ValueError(f"{what}: expected an integer SMTP code in 400..599, got {value!r}")
    return value


def check_count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}: expected a non-negative integer, got {value!r}")
    return value


def check_str(value, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string, got {value!r}")
    return value


def normalize_mode(raw) -> dict:
    """Validate a POST /mode body; returns the normalized mode (raises ValueError)."""
    if not isinstance(raw, dict):
        raise ValueError("mode must be a JSON object")
    unknown = sorted(set(raw) - MODE_KEYS)
    if unknown:
        raise ValueError(f"unknown mode keys {unknown}; allowed: {sorted(MODE_KEYS)}")
    mode: dict = {}
    for key, value in raw.items():
        if value is None:
            continue  # null == not set
        if key == "delay_ms":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"delay_ms: expected a non-negative number, got {value!r}")
            mode[key] = value
        elif key in ("data_code", "rcpt_code", "connect_code"):
            mode[key] = check_code(value, key)
        elif key in ("data_message", "rcpt_message", "connect_message"):
            mode[key] = check_str(value, key)
        elif key in ("fail_times", "rcpt_fail_times", "connect_fail_times", "reset_on_connect_times"):
            mode[key] = check_count(value, key)
        elif key in ("drop_after_data", "store_then_drop", "per_recipient_exact"):
            if not isinstance(value, bool):
                raise ValueError(f"{key}: expected true/false, got {value!r}")
            if value:
                mode[key] = True
        elif key == "per_recipient":
            if not isinstance(value, dict):
                raise ValueError("per_recipient: expected an object {address: code}")
            rules = {}
            for addr, rule in value.items():
                parse_reply(rule, f"per_recipient[{addr!r}]")  # validate
                rules[addr.strip()] = rule
            mode[key] = rules
    # Mailbox names may be case-sensitive at a real server: with per_recipient_exact the rules
    # match the recipient's spelling exactly; without it, in any case.
    if not mode.get("per_recipient_exact") and "per_recipient" in mode:
        mode["per_recipient"] = {a.lower(): r for a, r in mode["per_recipient"].items()}
    return mode


class Sink:
    """Global state shared by all SMTP connections and the control API.

    Everything runs on one asyncio loop, so no locking is needed except for
    the file-write thread pool, which only touches the file system.
    """

    def __init__(self, directory: str, executor: concurrent.futures.Executor):
        self.dir = directory
        self.executor = executor
        self.seq = self._initial_seq()
        self.reset()

    def _initial_seq(self) -> int:
        top = 0
        for name in os.listdir(self.dir):
            m = NAME_RE.match(name)
            if m:
                top = max(top, int(m.group(1)))
        return top

    def reset(self) -> None:
        self.set_mode({})
        self.counters = {
            "accepted": 0,
            "rejected": 0,
            "rejected_connect": 0,
            "rejected_rcpt": 0,
            "rejected_data": 0,
            "dropped": 0,
            "reset_on_connect": 0,
            "store_errors": 0,
            "connections": 0,
            "abandoned": 0,
        }

    def set_mode(self, mode: dict) -> None:
        self.mode = mode
        self._per_rcpt = {a: parse_reply(r, a) for a, r in mode.get("per_recipient", {}).items()}
        self.fail_left = {
            "data": mode.get("fail_times"),
            "rcpt": mode.get("rcpt_fail_times"),
            "connect": mode.get("connect_fail_times"),
            "reset": mode.get("reset_on_connect_times"),
        }

    def state(self, open_connections: int) -> dict:
        out = dict(self.counters)
        out["open_connections"] = open_connections
        out["mode"] = self.mode
        out["fail_left"] = {k: v for k, v in self.fail_left.items() if v is not None}
        out["last_seq"] = self.seq
        out["dir"] = self.dir
        return out

    def _take(self, stage: str) -> bool:
        """True if the fault of this stage applies now (and consumes one of its fail_times)."""
        left = self.fail_left[stage]
        if left is None:
            return True
        if left <= 0:
            return False
        self.fail_left[stage] = left - 1
        return True

    # Decisions (each returns None for "behave normally") -----------------

    def connect_reset(self) -> bool:
        """True if this new connection is to be reset (RST) before the greeting."""
        left = self.fail_left["reset"]
        if not left:
            return False
        self.fail_left["reset"] = left - 1
        self.counters["reset_on_connect"] += 1
        return True

    def connect_fault(self) -> str | None:
        code = self.mode.get("connect_code")
        if code is None or not self._take("connect"):
            return None
        self.counters["rejected"] += 1
        self.counters["rejected_connect"] += 1
        return reply_for(code, self.mode.get("connect_message"))

    def rcpt_fault(self, address: str) -> str | None:
        spelling = address.strip() if self.mode.get("per_recipient_exact") else address.strip().lower()
        rule = self._per_rcpt.get(spelling)
        if rule is None:
            code = self.mode.get("rcpt_code")
            if code is not None and self._take("rcpt"):
                rule = reply_for(code, self.mode.get("rcpt_message"))
        if rule is not None:
            self.counters["rejected"] += 1
            self.counters["rejected_rcpt"] += 1
        return rule

    def data_fault(self) -> str | None:
        """'drop', 'store_drop', a reply line, or None."""
        drop = self.mode.get("drop_after_data", False)
        store_drop = self.mode.get("store_then_drop", False)
        code = self.mode.get("data_code")
        if not drop and not store_drop and code is None:
            return None
        if not self._take("data"):
            return None
        if store_drop and not drop:
            self.counters["dropped"] += 1
            return "store_drop"
        if drop:
            self.counters["dropped"] += 1
            return "drop"
        self.counters["rejected"] += 1
        self.counters["rejected_data"] += 1
        return reply_for(code, self.mode.get("data_message"))

    # Storage -------------------------------------------------------------

    def next_name(self) -> str:
        self.seq += 1
        return f"{self.seq:06d}-{uuid.uuid4()}.eml"

    def write_file(self, name: str, data: bytes) -> None:
        """Runs in the thread pool: temp file in DIR, then an atomic rename."""
        tmp = os.path.join(self.dir, f".tmp-{uuid.uuid4().hex}.part")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, os.path.join(self.dir, name))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def list_messages(self) -> list[str]:
        return sorted(n for n in os.listdir(self.dir) if NAME_RE.match(n))

    def delete_messages(self) -> int:
        n = 0
        for name in os.listdir(self.dir):
            if NAME_RE.match(name):
                try:
                    os.unlink(os.path.join(self.dir, name))
                    n += 1
                except OSError:
                    pass
        return n


def header_value(s: str) -> str:
    return s.replace("\r", " ").replace("\n", " ")


class Handler:
    def __init__(self, sink: Sink):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        fault = self.sink.rcpt_fault(address)
        if fault is not None:
            if fault.startswith("421"):
                server.close_after_push = True
            return fault
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        sink = self.sink
        fault = sink.data_fault()  # decided on arrival of the message
        delay = sink.mode.get("delay_ms")
        if delay:
            # If the client gives up meanwhile, connection_lost() cancels us here
            # and nothing is stored (counted as "abandoned").
            try:
                await asyncio.sleep(delay / 1000.0)
            except asyncio.CancelledError:
                sink.counters["abandoned"] += 1
                raise
        if fault == "drop":
            server.drop_connection()
            # connection_lost() cancels this task; never answer.
            await asyncio.sleep(3600)
            return "451 4.3.0 not reached"
        if fault is not None and fault != "store_drop":
            if fault.startswith("421"):
                server.close_after_push = True
            return fault

        mail_from = envelope.mail_from or "<>"
        head = [
            f"X-Sink-Mail-From: {header_value(mail_from)}",
            f"X-Sink-Rcpt-To: {header_value(', '.join(envelope.rcpt_tos))}",
            "X-Sink-Received-At: "
            + datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        ]
        auth = getattr(session, "auth_data", None) if session.authenticated else None
        login = getattr(auth, "login", None)
        if login:
            if isinstance(login, bytes):
                login = login.decode("utf-8", "replace")
            head.append(f"X-Sink-Auth-User: {header_value(str(login))}")
        content = envelope.original_content or b""
        data = ("\r\n".join(head) + "\r\n").encode("utf-8") + content
        name = sink.next_name()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(sink.executor, sink.write_file, name, data)
        except OSError as e:
            log.error("could not store %s: %s", name, e)
            sink.counters["store_errors"] += 1
            return "451 4.3.0 Sink could not store the message"
        if fault == "store_drop":
            # Stored (the provider has the message), but the reply is lost.
            server.drop_connection()
            await asyncio.sleep(3600)
            return "451 4.3.0 not reached"
        sink.counters["accepted"] += 1
        log.debug("stored %s from %s to %s", name, mail_from, envelope.rcpt_tos)
        return f"250 OK queued as {name}"


class SinkSMTP(SMTP):
    """aiosmtpd's SMTP protocol plus: connection counting, connect-time
    rejection, close-after-reply for 421, abrupt drop and TCP_QUICKACK."""

    open_connections = 0

    def __init__(self, sink: Sink, quickack: bool, **kwargs):
        super().__init__(Handler(sink), **kwargs)
        self.sink = sink
        self.close_after_push = False
        self._quickack = quickack and hasattr(socket, "TCP_QUICKACK")
        self._sock = None
        self._counted = False

    def connection_made(self, transport):
        if not self._counted:
            self._counted = True
            SinkSMTP.open_connections += 1
            self.sink.counters["connections"] += 1
            self._sock = transport.get_extra_info("socket")
        super().connection_made(transport)

    def connection_lost(self, error):
        if self._counted:
            self._counted = False
            SinkSMTP.open_connections -= 1
        super().connection_lost(error)

    def data_received(self, data):
        # Clients that write the message body and the final "." in two
        # segments with Nagle on (lettre does) would otherwise wait ~40 ms
        # per message for our delayed ACK. Ask the kernel to ACK right away.
        if self._quickack and self._sock is not None:
            try:
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                self._quickack = False
        super().data_received(data)

    async def push(self, status):
        try:
            await super().push(status)
        finally:
            if self.close_after_push:
                self.close_after_push = False
                if self.transport is not None:
                    self.transport.close()

    def drop_connection(self):
        """Close abruptly: RST instead of FIN, no reply."""
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()

    async def _handle_client(self):
        if self.sink.connect_reset():
            self.drop_connection()
            return
        try:
            fault = self.sink.connect_fault()
        except Exception:  # never let a bad mode break a connection
            log.exception("connect_fault failed")
            fault = None
        if fault is not None:
            try:
                self.close_after_push = True
                await self.push(fault)
            except Exception:
                pass
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()


# --- control API (minimal HTTP/1.1 on asyncio streams) ---------------------

class ControlAPI:
    MAX_BODY = 1 << 20

    def __init__(self, sink: Sink):
        self.sink = sink

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        status, payload = 500, {"error": "internal error"}
        try:
            try:
                method, path, body = await asyncio.wait_for(self._read_request(reader), 30)
            except (ValueError, asyncio.LimitOverrunError) as e:
                status, payload = 400, {"error": f"bad request: {e}"}
            else:
                status, payload = self.dispatch(method, path, body)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            writer.close()
            return
        except Exception as e:  # never crash on a client error
            log.exception("control API error")
            status, payload = 500, {"error": f"{type(e).__name__}: {e}"}
        try:
            body_bytes = (json.dumps(payload) + "\n").encode()
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(
                status, "Error"
            )
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body_bytes)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body_bytes
            )
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _read_request(self, reader):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3:
            raise ValueError("malformed request line")
        method, target, _ = parts
        length = 0
        chunked = False
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            raise ValueError("chunked bodies are not supported; send Content-Length")
        if length < 0 or length > self.MAX_BODY:
            raise ValueError("body too large")
        body = await reader.readexactly(length) if length else b""
        path = target.split("?", 1)[0].rstrip("/") or "/"
        return method.upper(), path, body

    def dispatch(self, method: str, path: str, body: bytes):
        sink = self.sink
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError as e:
            return 400, {"error": f"invalid JSON: {e}"}
        if path == "/state":
            if method != "GET":
                return 405, {"error": "use GET"}
            return 200, sink.state(SinkSMTP.open_connections)
        if path == "/mode":
            if method == "GET":
                return 200, {"mode": sink.mode}
            if method != "POST":
                return 405, {"error": "use POST"}
            try:
                mode = normalize_mode(data)
            except ValueError as e:
                return 400, {"error": str(e)}
            sink.set_mode(mode)
            log.info("mode set: %s", json.dumps(mode))
            return 200, sink.state(SinkSMTP.open_connections)
        if path == "/reset":
            if method != "POST":
                return 405, {"error": "use POST"}
            if not isinstance(data, dict):
                return 400, {"error": "body must be a JSON object"}
            sink.reset()
            deleted = None
            if data.get("delete_messages"):
                deleted = sink.delete_messages()
                sink.seq = sink._initial_seq()  # DIR is empty: numbering restarts at 000001
            out = sink.state(SinkSMTP.open_connections)
            if deleted is not None:
                out["deleted"] = deleted
            log.info("reset")
            return 200, out
        if path == "/messages":
            if method != "GET":
                return 405, {"error": "use GET"}
            return 200, {"dir": sink.dir, "messages": sink.list_messages()}
        return 404, {"error": f"no such endpoint {method} {path}",
                     "endpoints": ["GET /state", "POST /mode", "GET /mode", "POST /reset", "GET /messages"]}


# --- main ------------------------------------------------------------------

def loop_exception_handler(loop, context):
    exc = context.get("exception")
    if isinstance(exc, (ConnectionError, asyncio.CancelledError)):
        log.debug("ignored: %s", context.get("message"))
        return
    loop.default_exception_handler(context)


async def main_async(args) -> int:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(loop_exception_handler)
    os.makedirs(args.dir, exist_ok=True)
    directory = os.path.abspath(args.dir)
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="sink-write")
    sink = Sink(directory, executor)
    tls_context = None
    if args.starttls_cert:
        tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_context.load_cert_chain(args.starttls_cert, args.starttls_key)

    def factory():
        return SinkSMTP(
            sink,
            quickack=not args.no_quickack,
            hostname=args.hostname,
            ident="smtp-sink (aiosmtpd)",
            enable_SMTPUTF8=True,
            decode_data=False,
            data_size_limit=args.max_size,
            timeout=args.idle_timeout,
            # AUTH PLAIN/LOGIN offered without TLS; any credentials succeed.
            auth_require_tls=False,
            auth_callback=lambda mechanism, login, password: True,
            tls_context=tls_context,
            require_starttls=tls_context is not None,
            loop=loop,
        )

    smtp_server = await loop.create_server(
        factory, host=args.host, port=args.port, reuse_address=True, backlog=1024
    )
    control = ControlAPI(sink)
    control_server = await asyncio.start_server(
        control.serve, host=args.host, port=args.control_port, reuse_address=True
    )
    smtp_port = smtp_server.sockets[0].getsockname()[1]
    control_port = control_server.sockets[0].getsockname()[1]

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if args.exit_on_stdin_eof:
        def watch_stdin():
            try:
                while sys.stdin.buffer.read(65536):
                    pass
            except Exception:
                pass
            loop.call_soon_threadsafe(stop.set)
        threading.Thread(target=watch_stdin, daemon=True, name="stdin-watch").start()

    sys.stdout.write(json.dumps({"smtp_port": smtp_port, "control_port": control_port}) + "\n")
    sys.stdout.flush()
    log.info("SMTP on %s:%d, control on %s:%d, storing in %s",
             args.host, smtp_port, args.host, control_port, directory)

    await stop.wait()
    log.info("shutting down")
    smtp_server.close()
    control_server.close()
    executor.shutdown(wait=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description="SMTP sink with fault injection (tests only).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="SMTP port; 0 picks a free one (default 0)")
    p.add_argument("--control-port", type=int, default=0, help="HTTP control port; 0 picks a free one")
    p.add_argument("--dir", required=True, help="directory for stored .eml files (created if missing)")
    p.add_argument("--hostname", default="smtp-sink.localhost", help="name in the 220 greeting / EHLO")
    p.add_argument("--max-size", type=int, default=32 * 1024 * 1024, help="max DATA size in bytes")
    p.add_argument("--idle-timeout", type=float, default=300.0, help="idle connection timeout, seconds")
    p.add_argument("--no-quickack", action="store_true",
                   help="do not set TCP_QUICKACK (reproduces the ~40 ms delayed-ACK stall of some clients)")
    p.add_argument("--starttls-cert", help="PEM certificate chain: offer STARTTLS and require it before MAIL")
    p.add_argument("--starttls-key", help="PEM private key of --starttls-cert")
    p.add_argument("--exit-on-stdin-eof", action="store_true",
                   help="exit when stdin is closed (tie the sink's life to the parent's pipe)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v: sink info logs; -vv: also aiosmtpd's per-command logs")
    args = p.parse_args()

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose >= 2 else logging.INFO if args.verbose == 1 else logging.WARNING,
        format="%(asctime)s smtp_sink %(levelname)s %(name)s: %(message)s",
    )
    # aiosmtpd warns on every AUTH about its own use of a deprecated attribute.
    logging.getLogger("mail.log").addFilter(
        lambda record: "login_data is deprecated" not in record.getMessage()
    )
    logging.getLogger("mail.log").setLevel(logging.INFO if args.verbose >= 2 else logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING if args.verbose < 2 else logging.DEBUG)
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
