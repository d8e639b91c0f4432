"""The ``fastnoise`` command: ``fastnoise {train,eval,demo} ...``.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; they are imported only when chosen, so ``fastnoise --help`` is quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS = {
    "train": ("fastnoise.train.cli", "train a model (Learn2Perturb, PNI, PNIL+NFGSM, ...)"),
    "eval": ("fastnoise.eval.cli", "evaluate a checkpoint against the attack suite"),
    "demo": ("fastnoise.demo", "offline end-to-end demo on the embedded dataset"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="fastnoise", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:
            modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(p)
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)
