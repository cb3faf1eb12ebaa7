"""A Kafka cluster for the tests and benchmarks: librdkafka's own mock cluster, which speaks the
Kafka protocol on real sockets (produce, fetch, consumer groups, committed offsets) and is what
librdkafka's tests run against. No Kafka broker is packaged for Debian or PyPI, so it is
started here through librdkafka's C API, from the library confluent-kafka's wheel carries.

``python tests/kafka_broker.py [BROKERS]`` prints the bootstrap servers (``127.0.0.1:PORT``)
on its first line. Each line it then reads, ``TOPIC PARTITIONS``, creates a topic and is
answered ``ok`` (or ``error N``); it serves until stdin closes or it is stopped.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from pathlib import Path

import confluent_kafka

PRODUCER = 0  # RD_KAFKA_PRODUCER


def _librdkafka() -> ctypes.CDLL:
    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    library = ctypes.CDLL(str(found[0]) if found else "librdkafka.so.1")
    library.rd_kafka_conf_new.restype = ctypes.c_void_p
    library.rd_kafka_new.restype = ctypes.c_void_p
    library.rd_kafka_new.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    library.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
    library.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
    library.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
    library.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
    library.rd_kafka_mock_topic_create.restype = ctypes.c_int
    library.rd_kafka_mock_topic_create.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
    ]  # fmt: skip
    return library


def main() -> None:
    brokers = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    library = _librdkafka()
    error = ctypes.create_string_buffer(512)
    handle = library.rd_kafka_new(PRODUCER, library.rd_kafka_conf_new(), error, len(error))
    if not handle:
        raise SystemExit(f"librdkafka: {error.value.decode()}")
    cluster = library.rd_kafka_mock_cluster_new(handle, brokers)
    if not cluster:
        raise SystemExit("librdkafka could not start its mock cluster")
    print(library.rd_kafka_mock_cluster_bootstraps(cluster).decode(), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    for line in sys.stdin:
        topic, partitions = line.split()
        code = library.rd_kafka_mock_topic_create(cluster, topic.encode(), int(partitions), 1)
        print("ok" if code == 0 else f"error {code}", flush=True)


if __name__ == "__main__":
    main()
