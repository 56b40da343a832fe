"""The ``dmirec`` command line: a thin dispatcher over the commands the packages declare.

Each package owns its commands and declares them in ``setup.py`` as ``dmirec.commands`` entry points
(``NAME = MODULE:FUNCTION``; the function adds the top-level command ``NAME`` to the sub-parsers). This
module knows none of them: it loads only the entry point of the command being run (every one for
``dmirec --help`` or an unknown command), so no package is imported to reach another's sub-commands and the
layering rules hold on the command line too: ``dmirec data ...`` never imports TensorFlow, ``dmirec serve``
and ``dmirec query`` never import TFX or ``trainer/``. Command modules import their heavy dependencies in
their handlers.

By default third-party noise stays off the terminal: TensorFlow's C++ log (the CUDA-factory errors of a
CPU-only machine), the warnings other libraries log (absl / TFX, TensorFlow, Beam: errors still show) and
their deprecation warnings. Our own messages and the
progress of long steps are unaffected; ``--verbose`` (anywhere on the line) shows everything. What cannot
be silenced from Python in TensorFlow 2.16: XLA's C++ lines (``absl::InitializeLog`` and three ``I0000``
lines) the first time a process compiles a model with XLA. Expected
failures (malformed input files, bad arguments) become a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from importlib import metadata

ENTRY_POINT_GROUP = "dmirec.commands"
VERBOSE_FLAG = "--verbose"
# Our packages: their warnings are messages to the user and stay visible.
OWN_PACKAGES = r"(trainer|pipeline|serving|bench)(\..*)?$"
# Third-party loggers that report library internals (TFX's resolver notes, Keras serialization notes,
# deprecations, Beam's missing optional codecs): errors only, unless --verbose.
THIRD_PARTY_LOGGERS = ("absl", "tensorflow", "apache_beam", "tfx", "ml_metadata", "google", "urllib3")


def declared_commands() -> dict[str, metadata.EntryPoint]:
    """The ``dmirec.commands`` entry points by command name, in ``setup.py``'s order.

    Raises:
      RuntimeError: none are declared (the project is not installed, or its metadata predates them).
    """
    commands = {point.name: point for point in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if not commands:
        raise RuntimeError(
            f"no {ENTRY_POINT_GROUP!r} entry points: install the project (pip install -e .) to register "
            "its commands"
        )
    return commands


def build_parser(names: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``dmirec`` parser with the named commands (default: every declared command).

    Args:
      names: the commands to register; only their modules are imported.

    Returns:
      The parser; each command's parser sets ``handler``.
    """
    declared = declared_commands()
    parser = argparse.ArgumentParser(
        prog="dmirec",
        description="DMI-Rec: Diffusion Multi-Interest retrieval (Le et al., SIGIR 2025) on TFX.",
    )
    parser.add_argument(
        VERBOSE_FLAG,
        action="store_true",
        help="show third-party logs and warnings (TensorFlow, absl, cloud SDKs); accepted anywhere",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in declared if names is None else names:
        declared[name].load()(commands)
    return parser


def _command_name(argv: Sequence[str], declared: Sequence[str]) -> str | None:
    """The command of ``argv`` when it is a declared one: its first argument not starting with ``-``."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in declared else None
    return None


def quiet_third_party(verbose: bool) -> None:
    """Keeps other packages' logs and warnings off the terminal unless ``verbose``.

    Must run before TensorFlow is imported (its C++ log level is read once, from the environment); a value
    the user exported wins.
    """
    if verbose:  # everything, deprecations included (Python hides those outside __main__ by default)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        warnings.simplefilter("default")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Beam's worker processes are new interpreters: they only see the environment (their deprecation
    # and end-of-support notices come from the cloud SDKs they import).
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=OWN_PACKAGES)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:  # absl's own verbosity (TFX and TensorFlow log through absl)
        from absl import logging as absl_logging
    except ImportError:  # pragma: no cover - absl comes with TensorFlow
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


def _forget_script_requirement() -> None:
    """Drops the ``__requires__`` that a legacy (``setup.py develop``) console script sets in ``__main__``.

    ``pip install -e .`` without a ``pyproject.toml`` writes such a script. With it set, the first import of
    ``pkg_resources`` (TFX imports ``setuptools``, which imports it) resolves the project's whole dependency
    tree and fails on a distribution whose metadata name it does not normalize (``jaraco.context``): every
    command that loads TFX died on start. The packages are already installed and checked by pip; nothing
    needs that resolution.
    """
    main_module = sys.modules.get("__main__")
    if main_module is not None and hasattr(main_module, "__requires__"):
        del main_module.__requires__


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one ``dmirec`` command; returns its exit status."""
    _forget_script_requirement()
    argv = list(sys.argv[1:] if argv is None else argv)
    separator = argv.index("--") if "--" in argv else len(argv)
    verbose = VERBOSE_FLAG in argv[:separator]
    if verbose:
        argv.remove(VERBOSE_FLAG)
    quiet_third_party(verbose)
    try:
        declared = declared_commands()
    except RuntimeError as e:
        print(f"dmirec: error: {e}", file=sys.stderr)
        return 2
    name = _command_name(argv, list(declared))
    args = build_parser(None if name is None else [name]).parse_args(argv)
    try:
        return args.handler(args)
    except (FileNotFoundError, ValueError) as e:  # LogFormatError, a bad --set, ... are ValueErrors
        print(f"dmirec {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dmirec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
