"""``iweblens client``: the closed-loop load client's command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from iweblens.cli import check_path, positive_int, unreadable
from iweblens.config import Settings


def _run_client(args: argparse.Namespace, settings: Settings) -> int:
    from iweblens.load import client

    try:
        images = client.list_images(check_path(args.inputfolder, folder=True))
    except OSError as error:
        raise unreadable(args.inputfolder, error) from None
    if not images:
        print(f"no .jpg, .jpeg or .png files in {args.inputfolder}", file=sys.stderr)
        return 2
    post = client.Poster(args.endpoint, args.protocol, args.timeout, args.keep_alive, args.api_key)
    outcomes, wall_s = client.send_all(
        images, post, args.num_threads, progress=not args.no_progress
    )
    failures = [outcome for outcome in outcomes if outcome.error is not None]
    for outcome in failures[: client.MAX_FAILURES_SHOWN]:
        print(f"{outcome.image.name}: {outcome.error}", file=sys.stderr)
    if len(failures) > client.MAX_FAILURES_SHOWN:
        print(f"... and {len(failures) - client.MAX_FAILURES_SHOWN} more failures", file=sys.stderr)
    result = client.summarize_load(outcomes, wall_s)
    if args.json:
        args.json.write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
    if args.csv:
        client.write_requests_csv(args.csv, outcomes)
    print("\n".join([*client.summary_lines(result), client.reference_line(result)]))
    return 0 if result.errors == result.timeouts == 0 else 1


def add_api_key_argument(parser: argparse.ArgumentParser) -> None:
    """``--api-key``, defaulting to IWEBLENS_API_KEY (client, experiment and bench share it)."""
    from iweblens.config import client_api_key

    parser.add_argument(
        "--api-key",
        default=client_api_key(),
        metavar="KEY",
        help="send Authorization: Bearer KEY, for a service started with IWEBLENS_API_KEYS "
        "(default: IWEBLENS_API_KEY; none is sent without it)",
    )


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    from iweblens.load.client import PROTOCOLS

    parser.description = (
        "Post every image of INPUTFOLDER once to ENDPOINT from NUM_THREADS threads and print "
        "latency percentiles, throughput and per-replica counts, ending with the reference "
        "client's 'Total client script time' line. Exit status 1 if any request failed."
    )
    parser.add_argument("inputfolder", type=Path, help="folder of .jpg/.jpeg/.png images")
    parser.add_argument("endpoint", help="e.g. http://127.0.0.1:5000/api/object_detection")
    parser.add_argument("num_threads", type=positive_int, help="concurrent client threads")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="multipart",
        help="multipart: the reference client's form upload (default); json: the later clients' "
        "double-encoded JSON body with a uuid5 id and base64 image",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="per-request timeout in seconds (default 60)"
    )
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="reuse one connection per thread (the reference opens a new one per request)",
    )
    add_api_key_argument(parser)
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the run summary as JSON")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write one row per request as CSV")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(run=_run_client)


ARGUMENTS = {"client": _client_arguments}
