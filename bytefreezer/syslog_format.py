"""Syslog line layouts (RFC 5424 and RFC 3164), shared by the proxy and the parse_syslog
transform. Patterns use named groups and the subset of syntax Python's re and RE2 share."""

from __future__ import annotations

RFC5424 = (
    r"^<(?P<priority>\d{1,3})>(?P<version>\d{1,2}) (?P<timestamp>\S+) (?P<hostname>\S+) "
    r"(?P<app_name>\S+) (?P<proc_id>\S+) (?P<msg_id>\S+) "
    # An SD element's quoted values may hold ] (escaped or not), " and \ escaped (RFC 5424 6.3.3);
    # elements with an unclosed quote are still taken up to their first ], as before.
    r"(?P<structured_data>-|(?:\[(?:[^\]\"\\]|\\.|\"(?:[^\"\\]|\\.)*\")*\])+|(?:\[[^\]]*\])+)"
    r" ?(?P<message>.*)$"
)
RFC3164 = (
    r"^(?:<(?P<priority>\d{1,3})>)?(?P<timestamp>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) "
    r"(?P<hostname>\S+) (?P<app_name>[^\s:\[]+)(?:\[(?P<proc_id>[^\]]+)\])?: ?(?P<message>.*)$"
)
FIELDS = (
    "rfc", "priority", "facility", "severity", "version", "timestamp", "hostname",
    "app_name", "proc_id", "msg_id", "structured_data", "message",
)  # fmt: skip
