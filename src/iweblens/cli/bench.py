"""The bench and reliability subcommands: ``bench``, ``bench-letterbox``, ``bench-decode``,
``quantize``, ``soak``, ``stress``, ``frigate``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from iweblens.cli import positive_float, positive_int
from iweblens.config import Settings, bench_images, env_name


def _run_bench(args: argparse.Namespace, settings: Settings) -> int:
    from iweblens.bench.agreement import REFERENCE_ENGINE
    from iweblens.bench.memory import SIZES
    from iweblens.bench.photos import jpg_photos
    from iweblens.bench.run import DEFAULT_ENGINES, QUICK_ROUNDS, log, run_bench

    images = jpg_photos(args.images, args.count)
    if len(images) < 2:
        print(f"iweblens bench: need at least 2 .jpg images in {args.images}", file=sys.stderr)
        return 2
    engines = args.engines.split(",") if args.engines else list(DEFAULT_ENGINES)
    model_engines: list[str] | None = None
    memory_sizes = list(SIZES)
    if args.quick:
        clients, replicas, rounds = 4, 2, QUICK_ROUNDS
        # The other models and the memory per network on the reference engine at one size only.
        model_engines, memory_sizes = [REFERENCE_ENGINE], [settings.input_size]
    else:
        clients, replicas, rounds = args.clients, args.replicas, args.rounds
    report = run_bench(
        images,
        engines,
        clients,
        replicas,
        rounds,
        settings,
        api_key=args.api_key,
        model_engines=model_engines,
        memory_sizes=memory_sizes,
    )
    text = "\n".join(report)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        log(f"written to {args.output}")
    return 0


def _run_bench_letterbox(args: argparse.Namespace, settings: Settings) -> int:
    from iweblens.bench.letterbox import letterbox_bench
    from iweblens.bench.photos import jpg_photos

    photos = jpg_photos(args.images, args.count)
    if not photos:
        print(f"iweblens bench-letterbox: no .jpg images in {args.images}", file=sys.stderr)
        return 2
    print("\n".join(letterbox_bench(photos, args.size, args.rounds)))
    return 0


def _run_bench_decode(args: argparse.Namespace, settings: Settings) -> int:
    from iweblens.bench import decoding
    from iweblens.bench.photos import jpg_photos

    images = jpg_photos(args.images, args.count)
    if not images:
        print(f"iweblens bench-decode: no .jpg images in {args.images}", file=sys.stderr)
        return 2
    parts = args.parts or ["agreement", "cpu", "memory"]
    if "memory" in parts:
        print("\n".join(decoding.memory(images[0], settings)) + "\n", flush=True)
    if "cpu" in parts:
        print("\n".join(decoding.cpu(images[: args.cpu_count], settings)) + "\n", flush=True)
    if "cost" in parts:
        from iweblens.bench.cost_model import cost_document

        args.cost_table.write_text(cost_document(images[0], settings, log=_log))
        print(f"wrote {args.cost_table}", flush=True)
    if "agreement" in parts:
        lines = decoding.reduced_decode_agreement(images, settings, log=_log, sizes_mp=args.sizes)
        print("\n".join(lines) + "\n", flush=True)
    return 0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_quantize(args: argparse.Namespace, settings: Settings) -> int:
    from iweblens.inference.quantize import calibration_set, quantize
    from iweblens.models.store import ModelStore, sha256_of

    paths = ModelStore.in_cache(settings.model_dir).ensure()
    images = calibration_set(args.images, args.count)
    if not images:
        print(f"no .jpg files in {args.images}")
        return 2
    target = quantize(paths, images, settings.input_size)
    print(f"quantized on {len(images)} images of {args.images}: {target}")
    print(f"weights sha256 {sha256_of(target.with_suffix('.bin'))}")
    return 0


def _run_soak(args: argparse.Namespace, settings: Settings) -> int:
    from iweblens.bench.soak import soak
    from iweblens.harness.manifest import manifest_pod_spec
    from iweblens.load.client import list_images

    images = list_images(args.images)
    if not images:
        print(f"iweblens soak: no images in {args.images}", file=sys.stderr)
        return 2
    spec = manifest_pod_spec(args.manifest)
    if args.cpus is not None:
        spec = dataclasses.replace(spec, cpu_cores=args.cpus)
    report = soak(images, spec, settings, duration_s=args.duration, clients=args.clients)
    print("\n".join(report.lines()))
    return 1 if report.failures else 0


def _run_stress(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from iweblens.bench.attacks.registry import ATTACKS, all_passed, run_stress, table
    from iweblens.harness.manifest import manifest_pod_spec
    from iweblens.load.client import list_images

    images = list_images(args.images)
    if not images:
        print(f"iweblens stress: no images in {args.images}", file=sys.stderr)
        return 2
    spec = manifest_pod_spec(args.manifest)
    spec = dataclasses.replace(spec, env={**spec.env, **dict(args.env)})
    results = run_stress(spec, images, args.attack or list(ATTACKS))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    columns = {path.stem: json.loads(path.read_text()) for path in args.compare}
    print("\n".join(table({**columns, args.label: results})))
    return 0 if all_passed(results) else 1


def _run_frigate(args: argparse.Namespace, settings: Settings) -> int:
    from iweblens.bench.frigate import frigate, report
    from iweblens.bench.photos import jpg_photos
    from iweblens.harness.manifest import manifest_pod_spec

    photos = jpg_photos(args.images, args.count)
    if not photos:
        print(f"iweblens frigate: no .jpg images in {args.images}", file=sys.stderr)
        return 2
    profiles = dict(args.profile or DEFAULT_FRIGATE_PROFILES)
    spec = manifest_pod_spec(args.manifest)
    runs = frigate(spec, photos, profiles, rate=args.rate, count=args.requests, seed=args.seed)
    text = "\n".join(report(runs))
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


# The server as it ships, and at the crop's own size.
DEFAULT_FRIGATE_PROFILES: tuple[tuple[str, dict[str, str]], ...] = (
    ("defaults", {}),
    ("input-320", {env_name("input_size"): "320"}),
)


def _profile(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"{text!r} names no profile")
    env = dict(_assignment(item) for item in assignments.split(",") if item)
    return name, env


def _frigate_arguments(parser: argparse.ArgumentParser) -> None:
    _photo_arguments(parser)
    parser.add_argument(
        "--rate", type=positive_float, default=5.0, help="requests a second (default 5)"
    )
    parser.add_argument(
        "--requests",
        type=positive_int,
        default=600,
        help="measured requests per profile (default 600)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrivals")
    parser.add_argument(
        "--profile",
        type=_profile,
        action="append",
        metavar="NAME[:VAR=VALUE,...]",
        help="a pod's settings over the manifest's (repeatable; default: "
        + ", ".join(name for name, _ in DEFAULT_FRIGATE_PROFILES)
        + ", e.g. int8-320:IWEBLENS_ENGINE=openvino-int8,IWEBLENS_INPUT_SIZE=320)",
    )
    _manifest_argument(parser)
    parser.add_argument("--output", type=Path, help="also write the Markdown table here")
    parser.set_defaults(run=_run_frigate)


def _photo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images",
        type=Path,
        default=bench_images(),
        help=f"folder of .jpg photographs (default: {env_name('bench_images')} or %(default)s)",
    )
    parser.add_argument("--count", type=positive_int, default=128, help="images used (default 128)")


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    from iweblens.bench.run import DEFAULT_ENGINES, DEFAULT_ROUNDS
    from iweblens.cli.load import add_api_key_argument

    _photo_arguments(parser)
    parser.add_argument("--engines", help=f"comma-separated (default {','.join(DEFAULT_ENGINES)})")
    parser.add_argument(
        "--clients", type=positive_int, default=32, help="client threads (default 32)"
    )
    parser.add_argument("--replicas", type=positive_int, default=3, help="replicas to scale to (3)")
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=DEFAULT_ROUNDS,
        help="rounds of alternated measurements; figures are their medians (default %(default)s)",
    )
    parser.add_argument("--output", type=Path, help="also write the Markdown report here")
    add_api_key_argument(parser)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short proof that it works: 4 clients, 2 replicas, 2 rounds; the other models and "
        "the memory per network on opencv only, at IWEBLENS_INPUT_SIZE only",
    )
    parser.set_defaults(run=_run_bench)


def _bench_letterbox_arguments(parser: argparse.ArgumentParser) -> None:
    _photo_arguments(parser)
    parser.add_argument("--rounds", type=positive_int, default=9, help="rounds of each (default 9)")
    parser.add_argument(
        "--size", type=positive_int, default=416, help="network input (default 416)"
    )
    parser.set_defaults(run=_run_bench_letterbox)


def _bench_decode_arguments(parser: argparse.ArgumentParser) -> None:
    _photo_arguments(parser)
    parser.add_argument(
        "--cpu-count",
        type=positive_int,
        default=16,
        help="photographs in the CPU rounds (default 16)",
    )
    parser.add_argument(
        "--sizes",
        type=positive_float,
        nargs="+",
        default=[12, 24],
        help="megapixels the photographs are upscaled to for the agreement (default 12 24)",
    )
    parser.add_argument(
        "--cost-table",
        type=Path,
        default=Path("docs/cost-model.md"),
        help="where the cost part writes its table (default docs/cost-model.md)",
    )
    parser.add_argument(
        "parts",
        nargs="*",
        choices=["agreement", "cpu", "memory", "cost"],
        help="what to measure (default: agreement, cpu, memory; cost runs only when named)",
    )
    parser.set_defaults(run=_run_bench_decode)


def _quantize_arguments(parser: argparse.ArgumentParser) -> None:
    from iweblens.inference.quantize import CALIBRATION_COUNT

    parser.add_argument("--images", type=Path, required=True, help="folder of .jpg photographs")
    parser.add_argument(
        "--count",
        type=positive_int,
        default=CALIBRATION_COUNT,
        help="use the first COUNT images by file name (default %(default)s)",
    )
    parser.set_defaults(run=_run_quantize)


def _soak_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", type=Path, help="folder of images to post (cycled)")
    parser.add_argument(
        "--duration", type=positive_float, default=600.0, help="seconds (default 600)"
    )
    parser.add_argument(
        "--clients", type=positive_int, default=32, help="concurrent clients (default 32)"
    )
    parser.add_argument(
        "--cpus", type=positive_float, help="the pod's CPU limit (default: the manifest's)"
    )
    _manifest_argument(parser)
    parser.set_defaults(run=_run_soak)


def _assignment(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def _manifest_argument(parser: argparse.ArgumentParser) -> None:
    from iweblens.harness.manifest import DEFAULT_MANIFEST

    parser.add_argument(
        "--manifest",
        type=Path,
        default=DEFAULT_MANIFEST,
        help="the Deployment whose limits (and probes) the pod gets (default %(default)s)",
    )


def _stress_arguments(parser: argparse.ArgumentParser) -> None:
    from iweblens.bench.attacks.registry import ATTACKS

    parser.add_argument("images", type=Path, help="folder of photographs")
    parser.add_argument(
        "--attack", action="append", choices=list(ATTACKS), help="run only this one (repeatable)"
    )
    _manifest_argument(parser)
    parser.add_argument(
        "--env",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in the pod's environment, over the manifest's (repeatable); e.g. PYTHONPATH="
        "to another checkout's src to run its server under the same harness",
    )
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--label", default="this run", help="column heading of this run")
    parser.add_argument(
        "--compare",
        type=Path,
        action="append",
        default=[],
        help="the --json of an earlier run, shown beside this one (repeatable)",
    )
    parser.set_defaults(run=_run_stress)


ARGUMENTS = {
    "bench": _bench_arguments,
    "bench-letterbox": _bench_letterbox_arguments,
    "bench-decode": _bench_decode_arguments,
    "quantize": _quantize_arguments,
    "soak": _soak_arguments,
    "stress": _stress_arguments,
    "frigate": _frigate_arguments,
}
