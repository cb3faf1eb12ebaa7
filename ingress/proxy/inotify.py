"""Directories watched with Linux's inotify, so that a `file` input reads a line when it is
written rather than at its next poll (Fluent Bit's `tail` does the same). The watch only wakes
the input: what a poll finds (globs, device and inode, checkpoints) stays the truth, and polling
every `poll_interval_seconds` goes on for what inotify does not see (network filesystems, a
system without inotify, a watch the kernel's limit refused)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import glob
import logging
import os
import struct
from collections.abc import Iterable

log = logging.getLogger(__name__)

# what a directory watch reports of the files in it: lines written, files created, renamed in or
# out, deleted; and of the directory itself, gone or moved (its watch then ends)
_MASK = 0x2 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800  # IN_MODIFY … IN_MOVE_SELF
_ONLYDIR = 0x01000000
_IGNORED = 0x8000  # a watch ended
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):  # not Linux, or a C library without inotify
        return None
    return libc


def pattern_directory(pattern: str) -> str:
    """The deepest directory of a glob pattern that has no wildcard (``/var/log`` of
    ``/var/log/*/app.log``), where files and directories the pattern may match appear."""
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    directory = os.sep.join(fixed)
    return directory or (os.sep if pattern.startswith(os.sep) else ".")


class DirectoryWatch:
    """An inotify instance watching some directories, setting ``wake`` on any event in them
    once attached to an event loop."""

    def __init__(self) -> None:
        self._libc = _libc()
        self._fd = -1
        self._watches: dict[str, int] = {}  # directory: watch descriptor
        self._said: set[str] = set()  # directories whose watch failed, logged once
        self.wake = asyncio.Event()
        if self._libc is not None:
            self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if self._fd < 0:
                log.warning(
                    "file input: no inotify (%s); new lines are found by polling",
                    os.strerror(ctypes.get_errno()),
                )

    @property
    def available(self) -> bool:
        return self._fd >= 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Set ``wake`` on ``loop`` when an event comes."""
        if self.available:
            loop.add_reader(self._fd, self._drain)

    def _drain(self) -> None:
        ended: set[int] = set()
        try:
            while data := os.read(self._fd, 65536):
                at = 0
                while at + _EVENT.size <= len(data):
                    descriptor, mask, _, length = _EVENT.unpack_from(data, at)
                    if mask & _IGNORED:  # the directory is gone: its watch ended
                        ended.add(descriptor)
                    at += _EVENT.size + length
        except BlockingIOError:
            pass
        if ended:  # watched again by the next ``watch`` if it comes back
            self._watches = {d: w for d, w in self._watches.items() if w not in ended}
        self.wake.set()

    def watch(self, directories: Iterable[str]) -> None:
        """Watch exactly ``directories`` (those that exist): new ones added, others let go."""
        if not self.available:
            return
        wanted = {os.path.abspath(d) for d in directories}
        for directory in set(self._watches) - wanted:
            assert self._libc is not None
            self._libc.inotify_rm_watch(self._fd, self._watches.pop(directory))
        for directory in wanted - set(self._watches):
            if not os.path.isdir(directory):
                continue  # not there yet: polling finds what appears, and a later call watches
            assert self._libc is not None
            descriptor = self._libc.inotify_add_watch(
                self._fd, os.fsencode(directory), _MASK | _ONLYDIR
            )
            if descriptor >= 0:
                self._watches[directory] = descriptor
                self._said.discard(directory)
            elif directory not in self._said:  # the watch limit, or no permission
                self._said.add(directory)
                log.warning(
                    "file input: cannot watch %s (%s); its files are found by polling",
                    directory,
                    os.strerror(ctypes.get_errno()),
                )

    @property
    def watched(self) -> set[str]:
        return set(self._watches)

    def close(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self._fd >= 0:
            if loop is not None:
                loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
            self._watches.clear()
