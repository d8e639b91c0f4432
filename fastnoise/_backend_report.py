"""What :func:`fastnoise.backends` returns: the backend rows, printed as a table.

It stays a plain list of rows (code indexes and filters it); only its printed form is
for people: per backend, available or why not, and which backend ``auto`` picks for each
device this machine has. Built only when asked for, so dispatch per call is unaffected.
"""

from __future__ import annotations

from typing import NamedTuple


class AutoPick(NamedTuple):
    device: str
    backend: str | None  # None: no backend runs this device


class BackendReport(list):
    """``BackendInfo`` rows, fastest first, that print as a readable table.

    ``devices``: the device types present here ("cpu", and "cuda" with a GPU).
    ``choice``: the backend in force (``"auto"`` unless set in code or by the environment).
    """

    def __init__(self, rows, devices: tuple[str, ...], choice: str) -> None:
        super().__init__(rows)
        self.devices = devices
        self.choice = choice

    def auto_pick(self, device: str) -> str | None:
        """The backend ``auto`` runs on ``device``: the first available row that runs it
        (the rule of ``fastnoise._dispatch._auto``)."""
        return next((r.name for r in self if r.available and device in r.devices), None)

    @property
    def auto(self) -> list[AutoPick]:
        return [AutoPick(d, self.auto_pick(d)) for d in self.devices]

    def __str__(self) -> str:
        header = ("backend", "available", "runs on", "why not")
        rows = [
            (r.name, "yes" if r.available else "no", ", ".join(r.devices) or "-", r.reason or "")
            for r in self
        ]
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(3)]
        lines = ["fastnoise backends, fastest first:"]
        for row in (header, *rows):
            cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
            lines.append("  " + "  ".join([*cells, row[3]]).rstrip())
        picks = ", ".join(f"{p.device} -> {p.backend or 'none'}" for p in self.auto)
        lines.append(f"auto picks: {picks}")
        lines.append(f"in force: {self.choice}")
        return "\n".join(lines)

    __repr__ = __str__  # the REPL shows the table too
