"""The ``fastnoise`` command: ``fastnoise {train,eval,certify,demo} ...``.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int`` (and optionally ``interrupted_message(args)`` for Ctrl-C); they are
imported only when chosen, so ``fastnoise --help`` is quick. Expected errors are one line
on stderr with exit status 2 (``--debug`` shows the traceback); Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fastnoise import __version__

# name -> (module, one-line help)
SUBCOMMANDS = {
    "train": ("fastnoise.train.cli", "train a model (Learn2Perturb, PNI, PNIL+NFGSM, ...)"),
    "eval": ("fastnoise.eval.cli", "evaluate a checkpoint against the attack suite"),
    "certify": ("fastnoise.certify.cli", "certify a checkpoint by randomized smoothing"),
    "demo": ("fastnoise.demo", "offline end-to-end demo on the embedded dataset"),
}
DESCRIPTION = "Noise-injection defenses for PyTorch: train, evaluate, certify, or run the demo."
EPILOG = "Run 'fastnoise COMMAND --help' for the flags of a command."
INTERRUPTED = 130  # the shell's status for a process ended by SIGINT (128 + 2)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage of train is a screenful)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = OneLineErrorParser(prog="fastnoise", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"fastnoise {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        if name == chosen:
            modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(p)
            p.add_argument(
                "--debug", action="store_true", help="on an error, show the full traceback"
            )
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, modules = build_parser(argv)
    args = parser.parse_args(argv)
    args.command_line = argv[1:]  # for messages that repeat the command (resume after Ctrl-C)
    module = modules[args.command]
    prog = f"fastnoise {args.command}"
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        describe = getattr(module, "interrupted_message", lambda _args: "interrupted")
        message = describe(args)
        if message:  # under torchrun only rank 0 speaks
            print(f"{prog}: {message}", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:
        from fastnoise.cli_errors import expected_error

        found = None if args.debug else expected_error(error)
        if found is None:
            raise
        message, status = found
        print(f"{prog}: error: {message}", file=sys.stderr)
        return status
