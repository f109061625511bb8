"""What could not be written yet: records kept until the ledger takes them.

A stop never waits on the ledger: vast.ai is asked first, and what the stop has to
record (the decision, the session's end and cost, the audit rows) is a *record*, a
list of operations with a unique id, applied in one transaction
(``ledger.Tx.apply``). When that transaction fails (disk full, the write lock held
for longer than the busy timeout, the file deleted or replaced, out of file
descriptors), the record is kept here:

* in memory, and
* in the spool file beside the ledger (``<ledger>.spool``, one JSON record a line,
  appended under ``flock`` so the CLI, the dashboard and the watchdog can share it).

Whoever next writes the ledger applies the kept records first, oldest first
(``Ledger.drain``); the ledger's ``applied`` table holds each applied id, so a record
is written once even if a process dies between applying it and removing it here.
If the process dies before the ledger works again, the records in the file survive
it and the next vastops process that writes the ledger applies them; what was only in
memory (the file could not be written either, e.g. the disk is full) is lost with the
process, and the watchdog says so on ``/healthz`` while it lasts.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from vastops.ledger.rows import Record

log = logging.getLogger("vastops.spool")


class Spool:
    def __init__(self, path: Path):
        self.path = path
        self._memory: list[Record] = []  # kept when the file cannot be written
        self._lock = threading.Lock()  # _memory is shared by the watchdog's threads
        self._warned: set[str] = set()
        self.file_error: str | None = None

    @contextmanager
    def _locked(self, mode: str) -> Iterator[IO[str]]:
        with open(self.path, mode, encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def keep(self, record: Record) -> None:
        """Keep a record that the ledger did not take. Never raises."""
        line = json.dumps(record, sort_keys=True) + "\n"
        try:
            with self._locked("a") as fh:
                end = fh.seek(0, os.SEEK_END)
                try:
                    if end and not _ends_with_newline(self.path, end):
                        line = "\n" + line  # after a torn line (a full disk), start clean
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
                except OSError:
                    os.truncate(self.path, end)  # never leave half a record for the next one to join
                    raise
            self.file_error = None
        except OSError as exc:
            self.file_error = f"{self.path}: {exc.strerror or exc}"
            with self._lock:
                self._memory.append(record)

    def pending(self) -> list[Record]:
        """Every kept record, oldest first (the file's, then memory's), each id once."""
        records: list[Record] = []
        try:
            if self.path.exists():
                with self._locked("r") as fh:
                    for line in fh:
                        if not line.strip():
                            continue
                        try:
                            records.append(json.loads(line))  # a line this module wrote: a Record
                        except ValueError:
                            if line not in self._warned:  # once per line, not at every look
                                self._warned.add(line)
                                log.warning("spool %s: an unreadable line is left out: %.80s", self.path, line)
        except OSError as exc:
            self.file_error = f"{self.path}: {exc.strerror or exc}"
        seen = {r.get("id") for r in records}
        with self._lock:
            records += [r for r in self._memory if r.get("id") not in seen]
        return records

    def waiting(self) -> bool:
        """Whether anything is kept (cheap: a stat and a look at memory)."""
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        return size > 0 or bool(self._memory)

    def forget(self, ids: set[str]) -> None:
        """Drop records the ledger has taken."""
        with self._lock:
            self._memory = [r for r in self._memory if r.get("id") not in ids]
        if not self.path.exists():
            return
        try:
            with self._locked("r+") as fh:
                lines = [line for line in fh if line.strip()]
                keep = [line for line in lines if _id(line) is not None and _id(line) not in ids]
                bad = [line for line in lines if _id(line) is None]
                if bad:  # set aside once, for a person to read: they can never be applied
                    with open(self.path.with_name(self.path.name + ".bad"), "a", encoding="utf-8") as out:
                        out.writelines(bad)
                fh.seek(0)
                fh.writelines(keep)
                fh.truncate()  # emptied, never removed: an appender may be waiting on its lock
        except OSError as exc:
            self.file_error = f"{self.path}: {exc.strerror or exc}"


def _ends_with_newline(path: Path, size: int) -> bool:
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


def _id(line: str) -> str | None:
    try:
        value = json.loads(line).get("id")
    except ValueError:
        return None
    return value if isinstance(value, str) else None
