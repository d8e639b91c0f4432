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


def compiled_path(device: str, backend: str | None) -> str:
    """What a torch.compile graph calls for ``device`` when ``backend`` runs it (the choice
    is made when the graph is traced: see ``fastnoise.functional``)."""
    if backend is None:
        return "none"
    if backend in ("cuda", "cpp"):
        return "the C++ ops"
    if backend == "triton" and device == "cuda":
        return "the Triton kernels (triton_op)"
    return "the custom ops"


class BackendReport(list):
    """``BackendInfo`` rows, fastest first, that print as a readable table.

    ``picks``: for each device type present here ("cpu", and "cuda" with a GPU), the
    backend ``auto`` runs (None: none does), as the dispatcher decides it.
    ``choice``: the backend in force (``"auto"`` unless set in code or by the environment).
    """

    def __init__(self, rows, picks: dict[str, str | None], choice: str) -> None:
        super().__init__(rows)
        self.auto = [AutoPick(device, name) for device, name in picks.items()]
        self.choice = choice

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
        compiled = ", ".join(
            f"{p.device} -> {compiled_path(p.device, self.in_force(p))}" for p in self.auto
        )
        lines.append(f"torch.compile graphs call: {compiled}")
        return "\n".join(lines)

    def in_force(self, pick: AutoPick) -> str | None:
        """The backend that runs ``pick.device`` under the choice in force (None: none)."""
        if self.choice == "auto":
            return pick.backend
        row = next((r for r in self if r.name == self.choice), None)
        return self.choice if row and row.available and pick.device in row.devices else None

    __repr__ = __str__  # the REPL shows the table too
