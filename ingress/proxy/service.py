"""The proxy process: listeners, batchers, the forwarder and the API, started and stopped as one."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import msgpack
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bytefreezer.ingress.bodies import BodyError, decompress
from bytefreezer.ingress.proxy import forward, relp, udp
from bytefreezer.ingress.proxy.config import UDP_RECEIVE_BUFFER, InputConfig, ProxyConfig
from bytefreezer.ingress.proxy.delivery import (
    Batcher,
    DeadLetters,
    Forwarder,
    GroupCommit,
    ProxyStats,
    wait_any,
)
from bytefreezer.ingress.proxy.inotify import DirectoryWatch
from bytefreezer.ingress.proxy.journald import Journal
from bytefreezer.ingress.proxy.kafka import TopicReader, consumer_settings
from bytefreezer.ingress.proxy.kafka import message_records as kafka_records
from bytefreezer.ingress.proxy.kinesis import StreamReader
from bytefreezer.ingress.proxy.mqtt import Subscription, message_records
from bytefreezer.ingress.proxy.netflow import NetflowDecoder
from bytefreezer.ingress.proxy.records import (
    RecordBlock,
    datagram_records,
    lines_records_with,
    nonblank_lines,
    records_with,
    split_lines,
    syslog_record,
    wrap_line,
)
from bytefreezer.ingress.proxy.sflow import SflowDecoder
from bytefreezer.ingress.proxy.sqs import (
    Message,
    ObjectLines,
    QueueReader,
    Unreadable,
    notified_objects,
    object_records,
)
from bytefreezer.ingress.proxy.tail import Tailer
from bytefreezer.ingress.spool import Spool, SpoolFull
from bytefreezer.lines import is_blank

log = logging.getLogger(__name__)

JOURNAL_READ = 4 << 20  # what a journald input reads and spools at once, at most


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, service: ProxyService, source: InputConfig) -> None:
        self._service = service
        self._source = source

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._source.type == "ebpf":
            self._service.accept_records(self._source, datagram_records(data))
            return
        decoder = self._service.decoders.get(self._source.name)
        if decoder is not None:
            self._service.accept_records(self._source, decoder.decode(data, addr[0]))
            return
        text = data[: self._source.max_line_bytes].decode("utf-8", "replace")
        if self._source.type == "syslog":
            self._service.accept(self._source, [text.rstrip("\r\n")], addr[0])
        else:
            self._service.accept(self._source, split_lines(text), addr[0])


class ProxyService:
    """Everything the proxy runs."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.stats = ProxyStats()
        self.spool = Spool(config.spool_dir, config.spool_max_bytes)
        self.dead = DeadLetters(config.dead_letter_dir, config.dead_letter_max_bytes, self.stats)
        self.forwarder = Forwarder(config, self.spool, self.dead, self.stats)
        self.batchers = {i.name: Batcher(config, i, self.spool, self.stats) for i in config.inputs}
        self.commits = {name: GroupCommit(batcher) for name, batcher in self.batchers.items()}
        self.netflow = {i.name: NetflowDecoder() for i in config.inputs if i.type == "netflow"}
        self.sflow = {i.name: SflowDecoder() for i in config.inputs if i.type == "sflow"}
        self.decoders: dict[str, NetflowDecoder | SflowDecoder] = {**self.netflow, **self.sflow}
        self.forward_stats = {
            i.name: {"malformed": 0, "auth_failures": 0}
            for i in config.inputs
            if i.type == "forward"
        }
        self.relp_stats = {
            i.name: {"sessions": 0, "malformed": 0} for i in config.inputs if i.type == "relp"
        }
        self.tailers = {
            i.name: Tailer(
                i.paths,
                self._checkpoints(i),
                read_from=i.read_from,
                max_line_bytes=i.max_line_bytes,
                multiline_start=i.multiline_start,
                multiline_timeout=i.multiline_timeout_seconds,
                container_format=i.container_format,
            )
            for i in config.inputs
            if i.type == "file"
        }
        self.watches: dict[str, DirectoryWatch] = {}  # of file inputs, once started
        self.kinesis: dict[str, StreamReader] = {}  # readers of kinesis inputs, once started
        self.queues: dict[str, QueueReader] = {}  # readers of sqs inputs, once started
        self.subscriptions: dict[str, Subscription] = {}  # of mqtt inputs, once started
        self.consumers: dict[str, TopicReader] = {}  # of kafka inputs, once started
        self.journals = {
            i.name: Journal(
                self._checkpoints(i),
                directory=i.journal_directory,
                units=i.units,
                read_from=i.read_from,
                journalctl=i.journalctl,
            )
            for i in config.inputs
            if i.type == "journald"
        }
        self.ports: dict[str, int] = {}
        self.udp_sockets: dict[str, tuple[int, int]] = {}  # inode, receive buffer bytes
        self._stop = asyncio.Event()
        self._closers: list[Any] = []
        self._connections: list[Any] = []  # NATS clients, drained on stop
        self._pulls: list[asyncio.Task[None]] = []  # JetStream pulls, ended before the drain
        self._tasks: list[asyncio.Task[Any]] = []

    # Records in ---------------------------------------------------------------------------

    def records(self, source: InputConfig, lines: list[str], peer: str) -> list[bytes]:
        """Lines of one input as JSON records: syslog parsed, other text wrapped, blank lines
        skipped, each cut to ``max_line_bytes``."""
        out = []
        for line in lines:
            if is_blank(line):
                continue
            line = line[: source.max_line_bytes]
            out.append(
                syslog_record(line, source.syslog_format, peer)
                if source.type in ("syslog", "relp")
                else wrap_line(line)
            )
        return out

    def accept(self, source: InputConfig, lines: list[str], peer: str) -> bool:
        """Queue lines from one input; False when some were refused (spool full)."""
        return self.accept_records(source, self.records(source, lines, peer))

    def accept_records(self, source: InputConfig, records: list[bytes]) -> bool:
        """Queue JSON records one input made; False when some were refused (spool full)."""
        batcher = self.batchers[source.name]
        ok = True
        for record in records:
            ok = batcher.add(record) and ok
        if records:
            self.forwarder.wake.set()
        return ok

    async def spool_records(self, source: InputConfig, records: list[bytes] | RecordBlock) -> bool:
        """Queue JSON records and return once they are in the spool, fsync'd (what an input
        answers or acknowledges only after); False when the spool refused them."""
        ok = await self.commits[source.name].spool(records)
        self.forwarder.wake.set()
        return ok

    async def _serve_tcp(self, source: InputConfig) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = (writer.get_extra_info("peername") or ("", 0))[0]
            try:
                while not reader.at_eof():
                    line = await _read_frame(reader, source)
                    if line is None:
                        break
                    self.accept(source, [line], peer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(
            handle, source.host, source.listen_port, limit=source.max_line_bytes + 2
        )
        self.ports[source.name] = server.sockets[0].getsockname()[1]
        self._closers.append(server)

    async def _serve_forward(self, source: InputConfig) -> None:
        """The Fluentd forward protocol on TCP (see ``forward``): records of a message asking
        for an ack are spooled before it is sent."""
        shared_key = source.shared_key.get_secret_value() if source.shared_key else None
        users = {user.username: user.password.get_secret_value() for user in source.users}
        hostname = socket.gethostname()
        counts = self.forward_stats[source.name]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            messages = forward.unpacker(source.max_body_bytes)
            peer = (writer.get_extra_info("peername") or ("", 0))[0]
            nonce = auth_salt = b""
            try:
                if shared_key is not None:
                    hello, nonce, auth_salt = forward.helo(bool(users))
                    writer.write(hello)
                    await writer.drain()
                while data := await reader.read(1 << 16):
                    messages.feed(data)
                    for message in messages:
                        if nonce:  # the first message after HELO is the client's PING
                            answer, reason = forward.pong(
                                message, nonce, shared_key or "", hostname, auth_salt, users
                            )
                            writer.write(answer)
                            await writer.drain()
                            if reason:
                                counts["auth_failures"] += 1
                                log.warning(
                                    "forward input %s: %s from %s", source.name, reason, peer
                                )
                                return
                            nonce = b""
                            continue
                        records, chunk = forward.decode_message(message, source.max_body_bytes * 10)
                        counts["malformed"] += sum(
                            1 for r in records if r.startswith(b'{"forward_error"')
                        )
                        if chunk is None:
                            self.accept_records(source, records)
                        elif await self.spool_records(source, records):
                            writer.write(forward.ack(chunk))
                            await writer.drain()
                        else:  # spool full: no ack, the client sends the chunk again later
                            return
            except msgpack.BufferFull:
                counts["malformed"] += 1
                log.warning(
                    "forward input %s: a message from %s exceeds %d bytes; connection closed",
                    source.name,
                    peer,
                    source.max_body_bytes,
                )
            except (ConnectionError, msgpack.UnpackException, ValueError, TypeError) as exc:
                # TypeError: a map keyed by an array or a map, which msgpack cannot hash
                if not isinstance(exc, ConnectionError):
                    counts["malformed"] += 1
                    log.warning(
                        "forward input %s: unreadable stream from %s: %s", source.name, peer, exc
                    )
            finally:
                writer.close()

        server = await asyncio.start_server(
            handle, source.host, source.listen_port, ssl=self._tls()
        )
        self.ports[source.name] = server.sockets[0].getsockname()[1]
        self._closers.append(server)

    async def _serve_relp(self, source: InputConfig) -> None:
        """RELP on TCP (see ``relp``): the messages of what arrived together are parsed as
        syslog and spooled, and only then is each acknowledged."""
        counts = self.relp_stats[source.name]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            frames = relp.FrameReader(source.max_body_bytes)
            peer = (writer.get_extra_info("peername") or ("", 0))[0]
            counts["sessions"] += 1
            opened = False
            try:
                while data := await reader.read(1 << 16):
                    answers: list[tuple[int, bytes | None]] = []  # None: a message to spool
                    lines: list[str] = []
                    closing: int | None = None
                    for frame in frames.feed(data):
                        if frame.command == "open":
                            answers.append((frame.txnr, relp.opened(frame)))
                            opened = True
                        elif frame.command == "syslog" and opened:
                            lines.append(frame.data.decode("utf-8", "replace"))
                            answers.append((frame.txnr, None))
                        elif frame.command == "close":
                            closing = frame.txnr
                            break
                        elif frame.command == "syslog":
                            raise relp.RelpError("a syslog frame before the session's open")
                        else:
                            reply = b"500 command " + frame.command.encode() + b" not supported"
                            answers.append((frame.txnr, relp.response(frame.txnr, reply)))
                    if lines and not await self.spool_records(
                        source, self.records(source, lines, peer)
                    ):
                        return  # spool full: nothing acknowledged, the client sends them again
                    writer.write(
                        b"".join(
                            relp.response(txnr, relp.OK) if answer is None else answer
                            for txnr, answer in answers
                        )
                    )
                    if closing is not None:
                        writer.write(relp.response(closing, b""))
                        await writer.drain()
                        return
                    await writer.drain()
            except relp.RelpError as exc:
                counts["malformed"] += 1
                log.warning("relp input %s: %s from %s; session ended", source.name, exc, peer)
                with suppress(ConnectionError):
                    writer.write(relp.SERVER_CLOSE)
            except ConnectionError:
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, source.host, source.listen_port)
        self.ports[source.name] = server.sockets[0].getsockname()[1]
        self._closers.append(server)

    async def _serve_file(self, source: InputConfig) -> None:
        """Follow the files of a `file` input (see ``tail``): each poll's lines are spooled,
        and only then do their files' checkpoints move."""
        tailer = self.tailers[source.name]
        loop = asyncio.get_running_loop()
        watch = DirectoryWatch() if source.inotify else None
        if watch is not None:
            watch.attach(loop)
            self.watches[source.name] = watch

        async def follow() -> None:
            try:
                while not self._stop.is_set():
                    if watch is not None:
                        watch.wake.clear()  # what changes from now on wakes the next wait
                    try:
                        if await self._tail_once(source, tailer):
                            continue  # lines came: look again at once (a backlog at speed)
                    except OSError as exc:  # the checkpoint directory cannot be written
                        log.error("file input %s: %s", source.name, exc)
                    if watch is not None:
                        watch.watch(tailer.directories())
                    woken = watch.wake if watch is not None and watch.available else None
                    await wait_any(self._stop, woken, source.poll_interval_seconds)
            finally:
                if watch is not None:
                    watch.close(loop)

        self._tasks.append(asyncio.create_task(follow()))

    async def _tail_once(self, source: InputConfig, tailer: Tailer) -> bool:
        """One poll of a file input; whether it moved a checkpoint (it read something)."""
        reads = await asyncio.to_thread(tailer.poll)
        moved = False
        for read in reads:
            records: list[bytes] | RecordBlock
            if read.records is not None:  # made as it was read (container runtimes' logs)
                records = read.records
            elif read.cut is None:  # the usual read: its lines as read, spooled as a block
                records = lines_records_with(read.raw, {"file": read.path})
            else:
                lines = [line for line in read.cut if not is_blank(line)]
                records = records_with(lines, {"file": read.path})
            if records and not await self.spool_records(source, records):
                break  # spool full: these lines are read again at the next poll
            tailer.commit(read)
            moved = True
        if moved:
            await asyncio.to_thread(tailer.save)
        return moved

    async def _serve_kinesis(self, source: InputConfig) -> None:
        """Read a Kinesis stream's shards (see ``kinesis``): each read's records are spooled,
        and only then do their shards' checkpoints move."""
        from botocore.exceptions import BotoCoreError, ClientError

        checkpoints = self._checkpoints(source)
        reader = await asyncio.to_thread(
            StreamReader,
            str(source.stream),
            checkpoints,
            region=source.region,
            endpoint_url=source.endpoint_url,
            read_from=source.read_from,
        )
        self.kinesis[source.name] = reader

        async def follow() -> None:
            said = ""  # the last error logged: a failing stream is not logged every poll
            while not self._stop.is_set():
                try:
                    batches = await asyncio.to_thread(reader.read)
                    moved = False
                    for batch in batches:
                        if batch.records and not await self.spool_records(source, batch.records):
                            reader.forget_iterators()  # spool full: read them again later
                            break
                        reader.commit(batch)
                        moved = True
                    if moved:
                        await asyncio.to_thread(reader.save)
                    said = ""
                except (BotoCoreError, ClientError, OSError) as exc:
                    reader.forget_iterators()  # an expired iterator, a throttled read: again
                    if str(exc) != said:
                        said = str(exc)
                        log.error("kinesis input %s: %s", source.name, exc)
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), source.poll_interval_seconds)

        self._tasks.append(asyncio.create_task(follow()))

    async def _serve_sqs(self, source: InputConfig) -> None:
        """Read an SQS queue (see ``sqs``): a message is deleted once its records are spooled;
        one that cannot be read is left in the queue for its redrive policy."""
        from botocore.exceptions import BotoCoreError, ClientError

        reader = await asyncio.to_thread(
            QueueReader,
            str(source.queue_url),
            region=source.region,
            endpoint_url=source.endpoint_url,
            s3_endpoint_url=source.s3_endpoint_url,
            wait_seconds=source.wait_seconds,
            visibility_timeout=source.visibility_timeout_seconds,
            max_line_bytes=source.max_line_bytes,
        )
        self.queues[source.name] = reader

        async def follow() -> None:
            said = ""  # the last error logged: a failing queue is not logged every poll
            while not self._stop.is_set():
                try:
                    messages = await asyncio.to_thread(reader.receive)
                    done: list[Message] = []
                    try:
                        for at, message in enumerate(messages):
                            spooled = await self._sqs_message(source, reader, message)
                            if spooled is None:  # stopping: the rest are read again elsewhere
                                await asyncio.to_thread(reader.release, messages[at:])
                                break
                            if spooled:
                                done.append(message)
                    finally:  # S3 unreachable midway: what was spooled is not read again
                        if done:
                            await asyncio.to_thread(reader.delete, done)
                    said = ""
                    continue
                except (BotoCoreError, ClientError, OSError) as exc:
                    if str(exc) != said:
                        said = str(exc)
                        log.error("sqs input %s: %s", source.name, exc)
                with suppress(TimeoutError):  # after an error: try again in a while
                    await asyncio.wait_for(self._stop.wait(), 5.0)

        self._tasks.append(asyncio.create_task(follow()))

    async def _sqs_message(
        self, source: InputConfig, reader: QueueReader, message: Message
    ) -> bool | None:
        """Spool one message's records: True once they are spooled, False if it cannot be read
        (left in the queue, with the reason logged), None if the proxy stopped first."""
        if not source.s3_notifications:
            body = await asyncio.to_thread(reader.body_records, message)
            return await self._spool_held(source, reader, message, body)
        try:
            for ref in notified_objects(message.body):
                lines = await asyncio.to_thread(reader.open, ref)
                meta = {"s3_bucket": ref.bucket, "s3_key": ref.key}

                def piece(
                    lines: ObjectLines = lines, meta: dict[str, str] = meta
                ) -> list[bytes] | RecordBlock | None:
                    """The next piece's records (maybe none: blank lines); None at the end."""
                    taken = next(lines, None)
                    return None if taken is None else object_records(taken, meta)

                # the next piece is read and made into records while this one is spooled
                pending = asyncio.ensure_future(asyncio.to_thread(piece))
                try:
                    while (records := await pending) is not None:
                        pending = asyncio.ensure_future(asyncio.to_thread(piece))
                        if records and not await self._spool_held(source, reader, message, records):
                            return None
                finally:
                    with suppress(Exception):  # its thread is done before the stream closes
                        await pending
                    lines.close()
                reader.objects_read += 1
        except Unreadable as exc:
            reader.failed += 1
            log.error(
                "sqs input %s: message %s left in the queue: %s", source.name, message.id, exc
            )
            return False
        return True

    async def _spool_held(
        self,
        source: InputConfig,
        reader: QueueReader,
        message: Message,
        records: list[bytes] | RecordBlock,
    ) -> bool:
        """Spool ``records`` of ``message``, the message kept invisible while the spool is full;
        False if the proxy stopped first."""

        async def held() -> None:
            await asyncio.to_thread(reader.keep_invisible, message)

        if not await self._spool_waiting(source, records, held):
            return False
        reader.records_read += len(records)
        await asyncio.to_thread(reader.keep_invisible, message)
        return True

    async def _serve_journald(self, source: InputConfig) -> None:
        """Follow the journal with journalctl (see ``journald``): what it writes is spooled as
        it comes, and only then does the cursor checkpoint move."""
        journal = self.journals[source.name]

        async def follow() -> None:
            while not self._stop.is_set():
                try:
                    process = await asyncio.create_subprocess_exec(
                        *journal.command(),
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                        limit=JOURNAL_READ,  # journalctl writes on while a read is spooled
                    )
                except OSError as exc:  # no journalctl
                    log.error("journald input %s: cannot run journalctl: %s", source.name, exc)
                else:
                    try:
                        await self._read_journal(source, journal, process)
                    finally:
                        if process.returncode is None:
                            process.terminate()
                        await process.wait()
                    if not self._stop.is_set():
                        assert process.stderr is not None
                        said = (await process.stderr.read()).decode("utf-8", "replace").strip()
                        log.error(
                            "journald input %s: journalctl ended (%s): %s",
                            source.name, process.returncode, said or "no message",
                        )  # fmt: skip
                with suppress(TimeoutError):  # journalctl ended: run it again in a while
                    await asyncio.wait_for(self._stop.wait(), 5.0)

        self._tasks.append(asyncio.create_task(follow()))

    async def _read_journal(
        self, source: InputConfig, journal: Journal, process: asyncio.subprocess.Process
    ) -> None:
        """Spool what journalctl writes, whatever has come at each read, until it ends or the
        proxy stops; a full spool holds the entries (and journalctl) until there is room."""
        assert process.stdout is not None
        stopping = asyncio.ensure_future(self._stop.wait())
        rest = b""
        try:
            while True:
                reading = asyncio.ensure_future(process.stdout.read(JOURNAL_READ))
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    reading.cancel()
                    return
                chunk = reading.result()
                if not chunk:
                    return  # journalctl ended
                data = rest + chunk
                end = data.rfind(b"\n") + 1
                rest = data[end:]
                if len(rest) > source.max_line_bytes:  # an entry past the limit: kept, cut
                    end, rest = len(data), b""
                lines = [line for line in data[:end].split(b"\n") if line.strip()]
                if not lines:
                    continue
                records, cursor = await asyncio.to_thread(journal.records, lines)
                if not await self._spool_waiting(source, records):
                    return
                await asyncio.to_thread(journal.commit, len(records), cursor)
        finally:
            stopping.cancel()

    async def _serve_mqtt(self, source: InputConfig) -> None:
        """Subscribe to an MQTT topic filter (see ``mqtt``): the messages that have come are
        spooled together, and only then acknowledged."""
        subscription = Subscription(
            source.servers[0],
            str(source.subject),
            client_id=source.durable or f"bytefreezer-{source.name}",
            qos=source.qos,
            username=source.username,
            password=source.password.get_secret_value() if source.password else None,
            loop=asyncio.get_running_loop(),
        )
        self.subscriptions[source.name] = subscription
        subscription.start()
        self._closers.append(subscription)

        async def follow() -> None:
            stopping = asyncio.ensure_future(self._stop.wait())
            try:
                while True:
                    getting = asyncio.ensure_future(subscription.queue.get())
                    await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if not getting.done():
                        getting.cancel()
                        return
                    taken = [getting.result()]
                    while not subscription.queue.empty() and len(taken) < 10_000:
                        taken.append(subscription.queue.get_nowait())
                    records = await asyncio.to_thread(message_records, taken, source.max_line_bytes)
                    if not await self._spool_waiting(source, records):
                        return  # stopping: not acknowledged, the broker sends them again
                    subscription.ack(taken)
            finally:
                stopping.cancel()

        self._tasks.append(asyncio.create_task(follow()))

    async def _serve_kafka(self, source: InputConfig) -> None:
        """Read Kafka topics in a consumer group (see ``kafka``): what a read took is spooled,
        and only then are its offsets stored for librdkafka to commit; while the spool is full
        the partitions are paused and the group served."""
        settings = consumer_settings(
            source.servers,
            group_id=source.group_id or f"bytefreezer-{source.name}",
            read_from=source.read_from,
            username=source.username,
            password=source.password.get_secret_value() if source.password else None,
            sasl_mechanism=source.sasl_mechanism,
            tls=source.tls,
            ca_file=str(source.ca_file) if source.ca_file else None,
            options=source.kafka_options,
        )
        reader = await asyncio.to_thread(TopicReader, settings, source.topics, name=source.name)
        self.consumers[source.name] = reader

        async def held() -> None:
            await asyncio.to_thread(reader.hold)

        async def follow() -> None:
            try:
                while not self._stop.is_set():
                    messages = await asyncio.to_thread(reader.take, 0.5)
                    if not messages:
                        continue
                    records = await asyncio.to_thread(
                        kafka_records, messages, source.max_line_bytes
                    )
                    if not await self._spool_waiting(source, records, held):
                        return  # stopping: not stored, read again from the committed offset
                    await asyncio.to_thread(reader.done, messages)
            finally:
                await asyncio.to_thread(reader.close)

        self._tasks.append(asyncio.create_task(follow()))

    async def _spool_waiting(
        self,
        source: InputConfig,
        records: list[bytes] | RecordBlock,
        meanwhile: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """Spool ``records``, trying again every 0.5 s while the spool is full (``meanwhile``
        after each wait); False if the proxy stopped first."""
        while not await self.spool_records(source, records):
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.5)
            if self._stop.is_set():
                return False
            if meanwhile is not None:
                await meanwhile()
        return True

    def _checkpoints(self, source: InputConfig) -> Path:
        """Where an input that reads on its own keeps its checkpoints, beside the spool."""
        spool = self.config.spool_dir
        return spool.parent / f"{spool.name}-checkpoints" / f"{source.name}.json"

    async def _serve_nats(self, source: InputConfig) -> None:
        """A subscription to a NATS subject: core NATS takes each message as it comes (at most
        once, as core NATS delivers); with a JetStream ``stream``, a durable pull consumer's
        messages are acknowledged once their records are spooled, and a proxy stopped or killed
        before that gets them again (at least once)."""
        import nats
        from nats.errors import TimeoutError as NatsTimeout

        token = source.nats_token.get_secret_value() if source.nats_token else None
        client = await nats.connect(
            servers=source.servers,
            token=token,
            name=f"bytefreezer-proxy-{source.name}",
            max_reconnect_attempts=-1,
            drain_timeout=5,
        )
        self._connections.append(client)

        def records(data: bytes) -> list[bytes]:
            return self.records(source, split_lines(data.decode("utf-8", "replace")), "")

        if source.stream is None:

            async def take(message: Any) -> None:
                self.accept_records(source, records(message.data))

            assert source.subject is not None  # the config requires it
            await client.subscribe(source.subject, queue=source.queue or "", cb=take)
            return
        subscription = await client.jetstream().pull_subscribe(
            source.subject or "",
            durable=source.durable or f"bytefreezer-{source.name}",
            stream=source.stream,
        )

        async def pull() -> None:
            try:
                await pulling()
            finally:  # nothing left for the connection's drain to wait for
                with suppress(Exception):
                    await subscription.unsubscribe()

        async def pulling() -> None:
            while not self._stop.is_set():
                try:
                    messages = await subscription.fetch(256, timeout=1)
                except NatsTimeout:
                    continue
                except Exception as exc:  # the server away: the client reconnects
                    log.warning("nats input %s: %s", source.name, exc)
                    await asyncio.sleep(1)
                    continue
                taken = [r for message in messages for r in records(message.data)]
                if await self.spool_records(source, taken):
                    for message in messages:
                        await message.ack()
                else:  # the spool is full: JetStream redelivers them later
                    for message in messages:
                        await message.nak(delay=5)

        self._pulls.append(asyncio.create_task(pull()))

    def _tls(self) -> ssl.SSLContext | None:
        """The proxy's certificate for its TCP listeners, when it has one."""
        if self.config.tls_cert_file is None or self.config.tls_key_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.config.tls_cert_file, self.config.tls_key_file)
        return context

    async def _serve_udp(self, source: InputConfig) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self, source), local_addr=(source.host, source.listen_port)
        )
        self.ports[source.name] = transport.get_extra_info("sockname")[1]
        sock = transport.get_extra_info("socket")
        asked = source.receive_buffer_bytes
        wanted = UDP_RECEIVE_BUFFER if asked is None else asked
        got = udp.receive_buffer(sock, wanted, source.name, asked=asked is not None)
        self.udp_sockets[source.name] = (udp.socket_inode(sock), got)
        self._closers.append(transport)

    async def _serve_http(self, app: Any, host: str, port: int, name: str) -> None:
        from hypercorn.asyncio import serve

        from bytefreezer.servers import hypercorn_config
        from bytefreezer.settings import TlsSettings

        tls = TlsSettings(cert_file=self.config.tls_cert_file, key_file=self.config.tls_key_file)
        if port == 0:
            import socket

            with socket.socket() as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
        config = hypercorn_config(host, port, tls)
        self.ports[name] = port
        self._tasks.append(
            asyncio.create_task(serve(app, config, shutdown_trigger=self._stop.wait))
        )
        await _listening("127.0.0.1" if host in ("0.0.0.0", "") else host, port)

    # Lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every listener and start batching and delivery."""
        for source in self.config.inputs:
            if source.type == "http":
                await self._serve_http(
                    self._input_app(source), source.host, source.listen_port, source.name
                )
            elif source.type == "forward":
                await self._serve_forward(source)
            elif source.type == "nats":
                await self._serve_nats(source)
            elif source.type == "relp":
                await self._serve_relp(source)
            elif source.type == "file":
                await self._serve_file(source)
            elif source.type == "kinesis":
                await self._serve_kinesis(source)
            elif source.type == "sqs":
                await self._serve_sqs(source)
            elif source.type == "journald":
                await self._serve_journald(source)
            elif source.type == "mqtt":
                await self._serve_mqtt(source)
            elif source.type == "kafka":
                await self._serve_kafka(source)
            elif source.type == "tcp" or (source.type == "syslog" and source.protocol == "tcp"):
                await self._serve_tcp(source)
            else:
                await self._serve_udp(source)
        await self._serve_http(self._api_app(), self.config.api_host, self.config.api_port, "api")
        self._tasks.append(asyncio.create_task(self.forwarder.run(self._stop)))
        self._tasks.append(asyncio.create_task(self._flush_due()))
        log.info("proxy listening: %s", self.ports)

    async def _flush_due(self) -> None:
        while not self._stop.is_set():
            for name, decoder in self.decoders.items():
                if expired := decoder.expired():  # packets whose template never came
                    self.accept_records(self._source(name), expired)
            for batcher in self.batchers.values():
                if batcher.due():
                    await asyncio.to_thread(batcher.flush)
                    self.forwarder.wake.set()
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Close listeners, spool what is batched, stop delivery (the spool keeps the rest)."""
        for closer in self._closers:
            closer.close()
        for name, decoder in self.decoders.items():
            left = decoder.drain("the proxy stopped before a template arrived")
            self.accept_records(self._source(name), left)
        self._stop.set()  # pulls end (what they took and did not spool is redelivered)
        await asyncio.gather(*self._pulls, return_exceptions=True)
        for connection in self._connections:
            with suppress(Exception):
                await connection.drain()
        for batcher in self.batchers.values():
            batcher.flush()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for tailer in self.tailers.values():
            tailer.close()

    def _udp_drops(self) -> dict[str, int]:
        """Datagrams the kernel dropped for each UDP input (none where it does not say)."""
        return udp.kernel_drops({name: inode for name, (inode, _) in self.udp_sockets.items()})

    def _source(self, name: str) -> InputConfig:
        return next(i for i in self.config.inputs if i.name == name)

    # HTTP apps ----------------------------------------------------------------------------

    def _input_app(self, source: InputConfig) -> Starlette:
        async def receive(request: Request) -> JSONResponse:
            if source.auth_token is not None:
                scheme, _, token = request.headers.get("authorization", "").partition(" ")
                expected = source.auth_token.get_secret_value()
                if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
                    return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
            body = await request.body()
            if len(body) > source.max_body_bytes:
                return JSONResponse(
                    {"error": f"body exceeds {source.max_body_bytes} bytes"}, status_code=413
                )
            try:  # gzip (every member: only the first was read), zstd, deflate, as the receiver
                encoding = request.headers.get("content-encoding", "")
                body = decompress(body, encoding, source.max_body_bytes * 10)
            except BodyError as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)
            lines = nonblank_lines(body)
            if not lines:
                return JSONResponse({"error": "empty body"}, status_code=400)
            peer = request.client.host if request.client else ""
            # 200 once the lines are on the proxy's disk: a proxy killed after answering
            # loses nothing (its spool is delivered when it starts again).
            if not await self.spool_records(source, self.records(source, lines, peer)):
                return JSONResponse(
                    {"error": "proxy spool full"}, status_code=503, headers={"Retry-After": "5"}
                )
            return JSONResponse({"status": "spooled", "lines": len(lines)})

        return Starlette(
            routes=[
                Route("/", receive, methods=["POST"]),
                Route("/ingest", receive, methods=["POST"]),
            ]
        )

    def _exposition(self) -> str:
        """The proxy's counters in the Prometheus text format."""
        stats, spool = self.stats, self.spool.stats()
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, values: list[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
            lines.extend(f"{name}{labels} {value}" for labels, value in values)

        per_input = lambda counts: [(f'{{input="{k}"}}', v) for k, v in sorted(counts.items())]  # noqa: E731
        # every input's series from the start: a rate or increase sees its first lines too
        every_input = {source.name: 0 for source in self.config.inputs}
        metric(
            "bytefreezer_proxy_lines_received_total",
            "counter",
            "Lines taken in.",
            per_input({**every_input, **stats.lines_in}),
        )
        metric(
            "bytefreezer_proxy_lines_refused_total",
            "counter",
            "Lines refused (spool full).",
            per_input({**every_input, **stats.lines_refused}),
        )
        metric(
            "bytefreezer_proxy_batches_spooled_total",
            "counter",
            "Batches spooled.",
            [("", stats.batches_spooled)],
        )
        metric(
            "bytefreezer_proxy_batches_delivered_total",
            "counter",
            "Batches the receiver took.",
            [("", stats.batches_delivered)],
        )
        metric(
            "bytefreezer_proxy_batches_dead_lettered_total",
            "counter",
            "Batches refused for good.",
            [("", stats.batches_dead_lettered)],
        )
        metric(
            "bytefreezer_proxy_delivery_retries_total",
            "counter",
            "Delivery attempts retried.",
            [("", stats.delivery_retries)],
        )
        metric(
            "bytefreezer_proxy_spool_bytes",
            "gauge",
            "Bytes waiting in the spool.",
            [("", spool.bytes)],
        )
        metric(
            "bytefreezer_proxy_spool_max_bytes",
            "gauge",
            "The spool's bound (spool_max_bytes): past it, inputs refuse what they take in.",
            [("", self.config.spool_max_bytes)],
        )
        metric(
            "bytefreezer_proxy_spool_objects",
            "gauge",
            "Batches waiting in the spool.",
            [("", spool.objects)],
        )
        if self.udp_sockets:
            metric(
                "bytefreezer_proxy_udp_drops_total",
                "counter",
                "Datagrams the kernel dropped before a UDP input read them (its receive buffer "
                "was full).",
                per_input(self._udp_drops()),
            )
            metric(
                "bytefreezer_proxy_udp_receive_buffer_bytes",
                "gauge",
                "The receive buffer the kernel gave a UDP input.",
                per_input({n: size for n, (_, size) in self.udp_sockets.items()}),
            )
        if self.netflow:
            metric(
                "bytefreezer_proxy_netflow_flows_total",
                "counter",
                "Flows decoded by a netflow input.",
                per_input({name: d.flows for name, d in self.netflow.items()}),
            )
            metric(
                "bytefreezer_proxy_netflow_undecoded_total",
                "counter",
                "Packets a netflow input forwarded undecoded (no template, not NetFlow).",
                per_input({name: d.undecoded for name, d in self.netflow.items()}),
            )
        if self.sflow:
            metric(
                "bytefreezer_proxy_sflow_samples_total",
                "counter",
                "Samples an sflow input decoded, by kind (flow, counter).",
                [
                    (f'{{input="{name}",kind="{kind}"}}', count)
                    for name, d in sorted(self.sflow.items())
                    for kind, count in (("flow", d.flow_samples), ("counter", d.counter_samples))
                ],
            )
            metric(
                "bytefreezer_proxy_sflow_undecoded_total",
                "counter",
                "Datagrams or samples an sflow input forwarded undecoded, with the reason.",
                per_input({name: d.undecoded for name, d in self.sflow.items()}),
            )
        if self.forward_stats:
            metric(
                "bytefreezer_proxy_forward_malformed_total",
                "counter",
                "Forward-protocol messages or entries not as the protocol says (kept as records "
                "with the reason), and messages past the size limit.",
                per_input({n: c["malformed"] for n, c in self.forward_stats.items()}),
            )
            metric(
                "bytefreezer_proxy_forward_auth_failures_total",
                "counter",
                "Forward-protocol clients that could not prove the shared key.",
                per_input({n: c["auth_failures"] for n, c in self.forward_stats.items()}),
            )
        if self.tailers:
            metric(
                "bytefreezer_proxy_file_lines_total",
                "counter",
                "Lines a file input read and spooled.",
                per_input({n: t.lines_read for n, t in self.tailers.items()}),
            )
            metric(
                "bytefreezer_proxy_files_followed",
                "gauge",
                "Files a file input follows.",
                per_input({n: t.followed for n, t in self.tailers.items()}),
            )
        if self.kinesis:
            metric(
                "bytefreezer_proxy_kinesis_records_total",
                "counter",
                "Records a kinesis input read and spooled.",
                per_input({n: r.records_read for n, r in self.kinesis.items()}),
            )
        if self.queues:
            metric(
                "bytefreezer_proxy_sqs_messages_total",
                "counter",
                "Messages an sqs input spooled the records of and deleted from its queue.",
                per_input({n: r.messages_read for n, r in self.queues.items()}),
            )
            metric(
                "bytefreezer_proxy_sqs_records_total",
                "counter",
                "Records an sqs input spooled.",
                per_input({n: r.records_read for n, r in self.queues.items()}),
            )
            metric(
                "bytefreezer_proxy_sqs_objects_total",
                "counter",
                "S3 objects an sqs input read to their end (announced by S3 event notifications).",
                per_input({n: r.objects_read for n, r in self.queues.items()}),
            )
            metric(
                "bytefreezer_proxy_sqs_unreadable_total",
                "counter",
                "Messages an sqs input left in its queue because they could not be read (not a "
                "notification, an object gone or denied); the queue's redrive policy moves them "
                "to its dead-letter queue.",
                per_input({n: r.failed for n, r in self.queues.items()}),
            )
        if self.subscriptions:
            metric(
                "bytefreezer_proxy_mqtt_messages_total",
                "counter",
                "MQTT messages an mqtt input spooled (and acknowledged, QoS 1).",
                per_input({n: s.messages_read for n, s in self.subscriptions.items()}),
            )
            metric(
                "bytefreezer_proxy_mqtt_connected",
                "gauge",
                "Whether an mqtt input is connected to its broker.",
                per_input({n: int(s.connected) for n, s in self.subscriptions.items()}),
            )
        if self.consumers:
            metric(
                "bytefreezer_proxy_kafka_messages_total",
                "counter",
                "Kafka messages a kafka input spooled (their offsets stored for commit).",
                per_input({n: c.messages_read for n, c in self.consumers.items()}),
            )
            metric(
                "bytefreezer_proxy_kafka_lag",
                "gauge",
                "Messages a kafka input's partitions hold past what it has read (consumer lag).",
                per_input({n: c.lag for n, c in self.consumers.items()}),
            )
            metric(
                "bytefreezer_proxy_kafka_partitions",
                "gauge",
                "Partitions assigned to a kafka input by its consumer group.",
                per_input({n: len(c.assigned) for n, c in self.consumers.items()}),
            )
            metric(
                "bytefreezer_proxy_kafka_paused",
                "gauge",
                "Whether a kafka input's partitions are paused because the spool is full.",
                per_input({n: int(c.paused) for n, c in self.consumers.items()}),
            )
        if self.journals:
            metric(
                "bytefreezer_proxy_journald_entries_total",
                "counter",
                "Journal entries a journald input read and spooled.",
                per_input({n: j.entries_read for n, j in self.journals.items()}),
            )
        if self.relp_stats:
            metric(
                "bytefreezer_proxy_relp_sessions_total",
                "counter",
                "RELP sessions (connections) a relp input accepted.",
                per_input({n: c["sessions"] for n, c in self.relp_stats.items()}),
            )
            metric(
                "bytefreezer_proxy_relp_malformed_total",
                "counter",
                "RELP sessions ended for a stream that is not RELP (what they had not been "
                "acknowledged is sent again by the client).",
                per_input({n: c["malformed"] for n, c in self.relp_stats.items()}),
            )
        return "\n".join(lines) + "\n"

    def _api_app(self) -> Starlette:
        async def health(request: Request) -> JSONResponse:
            return JSONResponse({"status": "ok"})

        async def stats(request: Request) -> JSONResponse:
            drops = self._udp_drops()
            return JSONResponse(
                {
                    **dataclasses.asdict(self.stats),
                    "spool": dataclasses.asdict(self.spool.stats()),
                    "dead_letters": len(self.dead.list()),
                    "ports": self.ports,
                    "netflow": {
                        name: {"flows": d.flows, "undecoded": d.undecoded}
                        for name, d in self.netflow.items()
                    },
                    "udp": {
                        name: {"receive_buffer_bytes": size, "drops": drops.get(name, 0)}
                        for name, (_, size) in self.udp_sockets.items()
                    },
                    "sflow": {
                        name: {
                            "flow_samples": d.flow_samples,
                            "counter_samples": d.counter_samples,
                            "undecoded": d.undecoded,
                        }
                        for name, d in self.sflow.items()
                    },
                    "forward": self.forward_stats,
                    "relp": self.relp_stats,
                    "file": {
                        n: {"files": t.followed, "lines": t.lines_read}
                        for n, t in self.tailers.items()
                    },
                    "kinesis": {
                        n: {"records": r.records_read, "shards": len(r.checkpoints)}
                        for n, r in self.kinesis.items()
                    },
                    "mqtt": {
                        n: {"messages": s.messages_read, "connected": s.connected}
                        for n, s in self.subscriptions.items()
                    },
                    "kafka": {
                        n: {
                            "messages": c.messages_read,
                            "lag": c.lag,
                            "partitions": len(c.assigned),
                            "paused": c.paused,
                        }
                        for n, c in self.consumers.items()
                    },
                    "journald": {
                        n: {"entries": j.entries_read, "cursor": j.cursor}
                        for n, j in self.journals.items()
                    },
                    "sqs": {
                        n: {
                            "messages": r.messages_read,
                            "records": r.records_read,
                            "objects": r.objects_read,
                            "unreadable": r.failed,
                        }
                        for n, r in self.queues.items()
                    },
                }
            )

        async def metrics(request: Request) -> Response:
            return Response(self._exposition(), media_type="text/plain; version=0.0.4")

        async def dead_letters(request: Request) -> JSONResponse:
            return JSONResponse(self.dead.list())

        async def retry(request: Request) -> JSONResponse:
            taken = self.dead.take(request.path_params["dead_id"])
            if taken is None:
                return JSONResponse({"error": "no such dead letter"}, status_code=404)
            key, data, metadata = taken
            try:
                self.spool.add(key, data, metadata)
            except SpoolFull as exc:
                return JSONResponse(
                    {"error": str(exc)}, status_code=503, headers={"Retry-After": "5"}
                )
            self.forwarder.wake.set()
            return JSONResponse({"status": "queued", "key": key})

        async def delete(request: Request) -> JSONResponse:
            if self.dead.take(request.path_params["dead_id"]) is None:
                return JSONResponse({"error": "no such dead letter"}, status_code=404)
            return JSONResponse({"status": "deleted"})

        return Starlette(
            routes=[
                Route("/health", health, methods=["GET"]),
                Route("/api/v1/health", health, methods=["GET"]),
                Route("/api/v1/stats", stats, methods=["GET"]),
                Route("/metrics", metrics, methods=["GET"]),
                Route("/api/v1/dead-letters", dead_letters, methods=["GET"]),
                Route("/api/v1/dead-letters/{dead_id}/retry", retry, methods=["POST"]),
                Route("/api/v1/dead-letters/{dead_id}", delete, methods=["DELETE"]),
            ]
        )


async def _listening(host: str, port: int, timeout: float = 15.0) -> None:
    """Wait until a server accepts connections on ``host:port``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


_MAX_COUNT_DIGITS = 10  # an RFC 6587 octet count; more digits than this are a line's text


async def _read_frame(reader: asyncio.StreamReader, source: InputConfig) -> str | None:
    """One message from a TCP stream: newline framed, or octet counted (RFC 6587) for syslog.

    A count is digits then a space; a line that only starts with digits (a message without a
    priority, beginning with its time) is read as a line. A frame longer than
    ``max_line_bytes`` is cut to it, as lines are, the rest read and dropped."""
    if source.type != "syslog":
        line = await _read_line(reader, source)
        return line.decode("utf-8", "replace").rstrip("\r\n") if line else None
    text = await reader.read(1)
    if not text:
        return None
    while text.isdigit() and len(text) <= _MAX_COUNT_DIGITS:
        byte = await reader.read(1)
        if byte == b" " and int(text) > 0:
            return await _read_counted(reader, int(text), source.max_line_bytes)
        if not byte:
            return text.decode()  # the stream ended after a line of digits
        text += byte
    if not text.endswith(b"\n"):
        text += await _read_line(reader, source)
    return text.decode("utf-8", "replace").rstrip("\r\n")


async def _read_counted(reader: asyncio.StreamReader, count: int, limit: int) -> str:
    """An octet-counted frame; one the stream ends inside is kept as far as it came."""
    try:
        kept = await reader.readexactly(min(count, limit))
    except asyncio.IncompleteReadError as exc:
        return exc.partial.decode("utf-8", "replace")
    left = count - len(kept)
    with suppress(asyncio.IncompleteReadError):
        while left:  # beyond the line limit: read and drop, never held in memory whole
            left -= len(await reader.readexactly(min(left, 1 << 16)))
    return kept.decode("utf-8", "replace")


async def _read_line(reader: asyncio.StreamReader, source: InputConfig) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        cut = await reader.readexactly(exc.consumed)
        while True:  # drop the rest of the over-long line
            try:
                await reader.readuntil(b"\n")
                break
            except asyncio.LimitOverrunError as more:
                await reader.readexactly(more.consumed)
        return cut[: source.max_line_bytes]
    except asyncio.IncompleteReadError as exc:
        return exc.partial


async def run_proxy(config: ProxyConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    import signal

    service = ProxyService(config)
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.stop()


__all__ = ["ProxyService", "run_proxy"]
