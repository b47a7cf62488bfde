"""Progress of the training loops: a tqdm bar on a terminal, log lines everywhere else.

A bar redrawn with carriage returns reads well on a terminal and floods a file: with output
redirected, one run would write a line per redraw. So a loop asked for progress shows a bar
only when tqdm finds a terminal (``disable=None``: tqdm disables itself when its stream is
not a TTY; notebooks show their widget), and otherwise writes one INFO line per sweep or
epoch to the ``fenchel_idl.drivers`` logger. The library adds no handler: an application
decides where the lines go (``fenchel-idl`` writes INFO lines to stderr).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["LOGGER", "Progress"]

LOGGER = logging.getLogger("fenchel_idl.drivers")


class Progress:
    """The progress display of one driver (a bar, or INFO lines, or nothing).

    Parameters
    ----------
    enabled : bool
        Whether progress was asked for (the drivers' ``progress`` argument). When False,
        nothing is shown and nothing is logged.
    desc : str
        The bar's label, also the prefix of the log lines.
    """

    def __init__(self, enabled: bool, desc: str):
        self.enabled, self.desc = bool(enabled), desc
        self.bar: Any = None
        self.terminal = False

    @property
    def logs(self) -> bool:
        """Whether progress goes to the log (asked for, but no bar on a terminal)."""
        return self.enabled and not self.terminal

    def open(self, total: int, unit: str, initial: int = 0) -> None:
        """Open the bar of ``total`` steps when progress is asked for and tqdm finds a
        terminal; otherwise remember that the progress goes to the log."""
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=initial, desc=self.desc, unit=unit, disable=None)
        self.terminal = not bar.disable
        if self.terminal:
            self.bar = bar
        else:
            bar.close()

    def update(self, postfix: str, n: int = 1) -> None:
        """Advance the bar by ``n`` steps with the status ``postfix`` (bar only)."""
        if self.bar is not None:
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(n)

    def postfix(self, text: str) -> None:
        """Set the bar's status without advancing it (bar only)."""
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def line(self, text: str) -> None:
        """One summary line (of a sweep or an epoch) to the log when there is no bar."""
        if self.logs:
            LOGGER.info("%s: %s", self.desc, text)

    def say(self, text: str) -> None:
        """A message: printed above the bar on a terminal, an INFO log line otherwise."""
        if not self.enabled:
            return
        if self.terminal:
            from tqdm.auto import tqdm

            tqdm.write(f"{self.desc}: {text}")
        else:
            LOGGER.info("%s: %s", self.desc, text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
