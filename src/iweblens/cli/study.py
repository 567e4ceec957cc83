"""The study's subcommands: ``experiment``, ``plot`` and ``report``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from iweblens.cli import positive_float, positive_int
from iweblens.config import POD_CPUS, Settings, env_name

if TYPE_CHECKING:
    from iweblens.study.experiment import Point
    from iweblens.study.results import ResultRow


def _run_plot(args: argparse.Namespace, settings: Settings) -> int:
    from iweblens.study.plot import figure_from_results, save_figure
    from iweblens.study.results import read_results

    figure = figure_from_results(read_results(args.results), log_y=args.log_y)
    for path in save_figure(figure, args.output):
        print(path)
    return 0


def _run_report(args: argparse.Namespace, settings: Settings) -> int:
    from iweblens.study.discussion import draft_discussion
    from iweblens.study.report import Identity, ReportError, render_report
    from iweblens.study.results import read_results
    from iweblens.study.summary import summarize

    rows = read_results(args.results)
    if args.discussion:
        discussion = args.discussion.read_text(encoding="utf-8")
    else:
        discussion = draft_discussion(rows, summarize(rows))
        draft = args.output.with_suffix(".discussion.txt")
        draft.write_text(discussion + "\n", encoding="utf-8")
        print(
            f"drafted the discussion from the data into {draft}: edit it, then rerun with "
            f"--discussion {draft}",
            file=sys.stderr,
        )
    identity = Identity(args.name, args.tutor, args.login, args.student_id)
    try:
        pdf, pages = render_report(rows, identity, discussion, paper=args.paper, log_y=args.log_y)
    except ReportError as exc:
        print(f"report not written: {exc}", file=sys.stderr)
        return 2
    args.output.write_bytes(pdf)
    print(f"{args.output} ({pages} page{'s' if pages > 1 else ''})")
    return 0


def _run_experiment(args: argparse.Namespace, settings: Settings) -> int:
    from iweblens.harness.manifest import ManifestError
    from iweblens.load.client import list_images
    from iweblens.study.experiment import interrupts_unwind, pending, plan
    from iweblens.study.replicas import BackendError
    from iweblens.study.results import read_results

    images = list_images(args.images) if args.images.is_dir() else []
    if not images:
        print(f"no .jpg, .jpeg or .png images in {args.images}", file=sys.stderr)
        return 2
    args.engine = args.engine or settings.engine
    rows = read_results(args.output) if args.output.exists() else []
    points = plan(args.pods, args.threads, args.repeats)
    todo = pending(points, rows, args.backend, args.engine)
    print(
        f"{len(points) - len(todo)} of {len(points)} runs already in {args.output}; "
        f"{len(todo)} to go over {len(images)} images from {args.images}",
        file=sys.stderr,
    )
    if not todo:
        return 0
    try:
        with interrupts_unwind():
            written = _sweep(args, todo, images)
    except (BackendError, ManifestError) as error:
        print(f"study stopped: {error}\nthe finished runs are in {args.output}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: the finished runs are in {args.output}; rerun", file=sys.stderr)
        raise
    print(f"{len(written)} runs appended to {args.output}", file=sys.stderr)
    return 0


def _sweep(
    args: argparse.Namespace, todo: Sequence[Point], images: Sequence[Path]
) -> list[ResultRow]:
    from iweblens.study.experiment import run_experiment
    from iweblens.study.replicas.registry import ReplicaOptions, create_backend

    options = ReplicaOptions(
        cpu_limit=args.cpu_limit,
        engine=args.engine,
        balancer_port=args.balancer_port,
        image=args.image,
        manifest=args.manifest,
        endpoint=args.endpoint,
        deployment=args.deployment,
        namespace=args.namespace,
        context=args.context,
    )
    backend = create_backend(args.backend, options)
    try:
        return run_experiment(
            backend, todo, images, args.output,
            engine=args.engine, protocol=args.protocol, timeout=args.timeout,
            ready_timeout=args.ready_timeout, api_key=args.api_key,
        )  # fmt: skip
    finally:
        backend.close()


def _counts(text: str) -> tuple[int, ...]:
    values = tuple(positive_int(item) for item in text.split(",") if item.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive whole numbers, e.g. 1,2,3")
    return values


def _listed(values: Sequence[int]) -> str:
    return ",".join(map(str, values))


def _plot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Mean of the per-run mean response time against the number of pods, one line per "
        "client thread count, error bars = sample std over repeats. Writes OUTPUT (PNG) and "
        "an SVG with the same stem."
    )
    parser.add_argument("results", type=Path, help="results CSV written by 'iweblens experiment'")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("plot.png"), help="PNG path (default plot.png)"
    )
    parser.add_argument(
        "--log-y", action="store_true", help="logarithmic y axis (separates the short latencies)"
    )
    parser.set_defaults(run=_run_plot)


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    from iweblens.study.report import PAPER_SIZES

    parser.description = (
        "Identity fields, the figure, a table of mean +- std per point and a discussion of "
        "at most 500 words, in 12 pt Times with 1-inch margins. Without --discussion a draft "
        "is written from the data (and saved next to the PDF for editing)."
    )
    parser.add_argument("results", type=Path, help="results CSV written by 'iweblens experiment'")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("report.pdf"), help="default report.pdf"
    )
    parser.add_argument("--name", required=True)
    parser.add_argument("--tutor", required=True)
    parser.add_argument("--login", required=True)
    parser.add_argument("--student-id", required=True)
    parser.add_argument(
        "--discussion", type=Path, metavar="FILE", help="text file, paragraphs split by blank lines"
    )
    parser.add_argument("--paper", choices=sorted(PAPER_SIZES), default="a4")
    parser.add_argument("--log-y", action="store_true", help="logarithmic y axis in the figure")
    parser.set_defaults(run=_run_report)


def _experiment_arguments(parser: argparse.ArgumentParser) -> None:
    from iweblens.cli.load import add_api_key_argument
    from iweblens.inference.engines import ENGINES
    from iweblens.load.client import PROTOCOLS
    from iweblens.study.experiment import (
        DEFAULT_IMAGES,
        DEFAULT_OUTPUT,
        DEFAULT_PODS,
        DEFAULT_REPEATS,
        DEFAULT_THREADS,
    )
    from iweblens.study.replicas.registry import BACKENDS, ReplicaOptions

    defaults = ReplicaOptions()

    parser.description = (
        "Sweep pods x client threads x repeats, one load run each over the same images, one "
        "row appended (and fsync'd) to the results CSV per run. A rerun skips the points the "
        "CSV already holds; Ctrl-C loses only the run in flight. Each run waits for every "
        "replica to be ready and is flagged on stderr if a replica served no request."
    )
    parser.add_argument(
        "--backend",
        choices=tuple(BACKENDS),
        default="local",
        help="where the replicas run (default local: cgroup-limited processes behind HAProxy)",
    )
    parser.add_argument(
        "--pods", type=_counts, default=DEFAULT_PODS, help=f"default {_listed(DEFAULT_PODS)}"
    )
    parser.add_argument(
        "--threads",
        type=_counts,
        default=DEFAULT_THREADS,
        help=f"client thread counts (default {_listed(DEFAULT_THREADS)})",
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=DEFAULT_REPEATS, help=f"default {DEFAULT_REPEATS}"
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=DEFAULT_IMAGES,
        metavar="FOLDER",
        help=f"photographs sent in every run (default {DEFAULT_IMAGES}; for the assignment, "
        "its 128-image folder)",
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"results CSV, default {DEFAULT_OUTPUT}"
    )
    parser.add_argument(
        "--engine",
        choices=tuple(ENGINES),
        help=f"the replicas' inference engine (default {env_name('engine')} or the service's); "
        "for kubernetes, name the one the Deployment runs, it is only recorded",
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, default="multipart")
    add_api_key_argument(parser)
    parser.add_argument(
        "--timeout", type=positive_float, default=60.0, help="per-request seconds (default 60)"
    )
    parser.add_argument(
        "--ready-timeout",
        type=positive_float,
        default=180.0,
        help="seconds to wait for replicas to be ready (default 180)",
    )
    local = parser.add_argument_group("local and docker backends")
    local.add_argument(
        "--cpu-limit",
        type=positive_float,
        metavar="CORES",
        help=f"per replica (default {POD_CPUS} for local, the manifest's limit for docker)",
    )
    local.add_argument(
        "--balancer-port", type=int, default=0, help="HAProxy's loopback port (default: a free one)"
    )
    local.add_argument(
        "--image",
        default=defaults.image,
        help=f"docker: the service image, default {defaults.image}",
    )
    local.add_argument(
        "--manifest",
        type=Path,
        default=defaults.manifest,
        help=f"docker: the Deployment whose resources.limits.cpu each container gets "
        f"(default {defaults.manifest})",
    )
    cluster = parser.add_argument_group("kubernetes backend")
    cluster.add_argument(
        "--endpoint",
        default=defaults.endpoint,
        help=f"the Service's URL (default {defaults.endpoint}: kind maps the NodePort there)",
    )
    cluster.add_argument(
        "--deployment", default=defaults.deployment, help=f"default {defaults.deployment}"
    )
    cluster.add_argument("--namespace", help="default: kubectl's")
    cluster.add_argument("--context", help="kubectl context (default: the current one)")
    parser.set_defaults(run=_run_experiment)


ARGUMENTS = {
    "plot": _plot_arguments,
    "report": _report_arguments,
    "experiment": _experiment_arguments,
}
