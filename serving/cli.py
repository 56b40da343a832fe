"""``dmirec serve`` and ``dmirec query``: the serving package's command-line commands.

:func:`add_serve_command` and :func:`add_query_command` register them; ``setup.py`` declares them as
``dmirec.commands`` entry points for the ``dmirec`` dispatcher (``pipeline/cli.py``). The server, the client
and TensorFlow are imported by the handlers, so ``--help`` answers at once. ``serve`` takes
``tensorflow_model_server``'s flags and runs in the foreground until SIGINT or SIGTERM; ``query`` asks any
TF Serving endpoint for the top items of one or more histories.
"""

from __future__ import annotations

import argparse
import logging
import sys

from serving import server_config

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``dmirec serve`` (the ``serve`` entry point in ``setup.py``).

    Args:
        subparsers: what ``ArgumentParser.add_subparsers`` returned.
    """
    serve = subparsers.add_parser(
        "serve",
        help="serve SavedModels over TensorFlow Serving's gRPC API (development server)",
        description="Serve DMI-Rec SavedModels over TensorFlow Serving's gRPC API (Predict, "
        "GetModelMetadata, GetModelStatus, HandleReloadConfigRequest) until interrupted. Flags mirror "
        "tensorflow_model_server's; new versions under a base path are picked up while serving.",
    )
    server_config.add_server_flags(serve)
    serve.set_defaults(handler=run_serve)


def add_query_command(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``dmirec query`` (the ``query`` entry point in ``setup.py``).

    Args:
        subparsers: what ``ArgumentParser.add_subparsers`` returned.
    """
    query = subparsers.add_parser(
        "query",
        help="ask a running server for the top items of user histories",
        description="Ask a TF Serving endpoint (ours or tensorflow_model_server) for the top items of "
        "each history and print them with their scores.",
    )
    query.add_argument(
        "--server", default="127.0.0.1:8500", metavar="HOST:PORT", help="the server (default: 127.0.0.1:8500)"
    )
    query.add_argument("--model", default="dmi", metavar="NAME", help="model name (default: dmi)")
    query.add_argument(
        "--history",
        action="append",
        required=True,
        type=_item_ids,
        metavar="ID,ID,...",
        help="comma-separated item ids, oldest first; repeat for several users (an empty value is allowed)",
    )
    query.add_argument("--top-n", type=int, metavar="N", help="items per user (default: the model's default)")
    query.add_argument("--version", type=int, metavar="N", help="model version (default: the newest served)")
    query.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="deadline in seconds (default: 5)"
    )
    query.set_defaults(handler=run_query)


def _configure_tensorflow_threads(intra_op: int, inter_op: int) -> None:
    """Sets TensorFlow's thread pools before any model is loaded (0 keeps TensorFlow's default)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as e:  # TensorFlow already ran an op in this process: keep its pools.
        logging.getLogger(__name__).warning("TensorFlow thread pools already set, keeping them: %s", e)


def _show_server_log() -> None:
    """Sends the server's own INFO lines (loads, swaps, refusals) to stderr.

    The root logger is not used: TensorFlow and the cloud SDKs may have configured it (absl installs a
    handler), which would drop or reformat these lines.
    """
    logger = logging.getLogger("serving")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def run_serve(args: argparse.Namespace) -> int:
    """Handler of ``dmirec serve``: serves in the foreground until SIGINT or SIGTERM.

    Args:
        args: the parsed ``serve`` flags.

    Returns:
        Exit status: 0 once stopped by a signal, 1 if the address cannot be bound.

    Raises:
        ValueError: inconsistent flags or a bad model config file.
        FileNotFoundError: the model config file does not exist.
    """
    from serving.server import ModelServer, serve_until_signalled

    options = server_config.server_options_from_flags(args)
    _configure_tensorflow_threads(args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism)
    _show_server_log()
    server = ModelServer(options)
    try:
        server.start()
    except OSError as e:
        print(f"dmirec serve: error: {e}", file=sys.stderr)
        return 1
    print(f"serving at {server.address}:", flush=True)
    for model in server.models:
        print(f"  {model.name}: {model.base_path}", flush=True)
    print("stop with Ctrl-C (SIGINT) or SIGTERM", flush=True)
    serve_until_signalled(server)
    return 0


def run_query(args: argparse.Namespace) -> int:
    """Handler of ``dmirec query``: prints the top items of each history.

    Args:
        args: the parsed ``query`` flags.

    Returns:
        Exit status: 0, or 1 if the server could not answer (the reason goes to stderr).
    """
    from serving.client import RetrievalClient, ServingError

    try:
        with RetrievalClient(args.server, args.model, timeout_s=args.timeout) as client:
            results = client.retrieve(args.history, top_n=args.top_n, version=args.version)
    except ServingError as e:
        print(f"dmirec query: error: {e}", file=sys.stderr)
        return 1
    for history, items in zip(args.history, results):
        print(f"history: {','.join(history) or '(empty)'}")
        for rank, (item_id, score) in enumerate(items, start=1):
            print(f"  {rank:>3}. {item_id}  {score:.4f}")
    return 0


def _item_ids(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]
