"""Driving an interactive command through a pseudo-terminal, expect-style (standard library only).

`Terminal(cmd)` starts `cmd` with a new pseudo-terminal as its stdin, stdout and stderr, so the
program sees a real terminal (line discipline, echo) as it would for a user. `expect(text)` reads
what the program wrote until `text` appears (bounded by a timeout; the failure shows everything
read so far); `send_line(answer)` types a line and presses enter. Every wait is bounded, and the
process is killed on `close()` if it is still running.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time

#: How long one `expect` waits for its text.
EXPECT_TIMEOUT = 30.0


class Terminal:
    def __init__(self, cmd: list[str], *, cwd=None, env=None):
        main, child = pty.openpty()
        self._fd = main
        self.proc = subprocess.Popen(cmd, stdin=child, stdout=child, stderr=child, cwd=cwd, env=env,
                                     start_new_session=True, close_fds=True)
        os.close(child)
        #: Everything the program wrote, as text (carriage returns dropped).
        self.transcript = ""
        self._seen = 0

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self._fd, 65536)
        except OSError:  # the program exited and closed its side
            return False
        if not data:
            return False
        self.transcript += data.decode("utf-8", "replace").replace("\r", "")
        return True

    def expect(self, text: str, timeout: float = EXPECT_TIMEOUT) -> str:
        """Waits until `text` appears after what earlier expects consumed; returns what came
        before it."""
        deadline = time.monotonic() + timeout
        while True:
            at = self.transcript.find(text, self._seen)
            if at >= 0:
                before = self.transcript[self._seen:at]
                self._seen = at + len(text)
                return before
            left = deadline - time.monotonic()
            if left <= 0 or (not self._read(min(left, 0.5)) and self.proc.poll() is not None
                             and not self._read(0.1)):
                raise AssertionError(
                    f"{text!r} did not appear within {timeout}s (exit code {self.proc.poll()});"
                    f" the terminal showed:\n{self.transcript}")

    def send_line(self, line: str) -> None:
        """Types `line` and enter."""
        os.write(self._fd, line.encode() + b"\r")

    def send_eof(self) -> None:
        """Presses ^D at the start of a line: the program reads the end of its input."""
        os.write(self._fd, b"\x04")

    def wait(self, timeout: float = EXPECT_TIMEOUT) -> int:
        """Reads the rest of the output and returns the exit code (bounded)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        while self._read(0.1):
            pass
        if self.proc.poll() is None:
            raise AssertionError(f"still running after {timeout}s; the terminal showed:\n{self.transcript}")
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        try:
            os.close(self._fd)
        except OSError:
            pass
