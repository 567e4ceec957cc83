"""The arrows between the subpackages, each subpackage's public names, and a light ``serve``.

Imports are read from the source (every ``import`` statement, including those inside functions),
so a lazy import breaks a rule as surely as a module-level one.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import requests
from support import IMAGES_DIR, REPO_DIR, ServerProcess

SRC = REPO_DIR / "src"
PACKAGE = SRC / "iweblens"

SERVICE, INFERENCE, MODELS, CLI = (
    "iweblens.service",
    "iweblens.inference",
    "iweblens.models",
    "iweblens.cli",
)
KITS = ("iweblens.study", "iweblens.load", "iweblens.bench")
IN_PROCESS = (SERVICE, INFERENCE, MODELS)
PIXELS = ("cv2", "PIL")
PLOTTING = ("matplotlib", "reportlab")
WEB = ("flask", "werkzeug", "uvicorn", "a2wsgi", "httptools", "uvloop")

# Module prefix -> prefixes of what no module under it may import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "iweblens.allocator": ("iweblens",),
    "iweblens.config": ("iweblens",),
    "iweblens.detection": ("iweblens",),
    SERVICE: (*KITS, CLI, "cv2", *PLOTTING),
    INFERENCE: (SERVICE, *KITS, CLI, *WEB, *PLOTTING),
    MODELS: (SERVICE, INFERENCE, *KITS, CLI, *PIXELS, *WEB),
    # The load and the study kits reach the service over HTTP only.
    "iweblens.load": (*IN_PROCESS, "iweblens.study", "iweblens.bench", CLI, *PIXELS, *WEB),
    "iweblens.study": (*IN_PROCESS, "iweblens.bench", CLI, *PIXELS, *WEB),
    "iweblens.bench": (CLI,),
    # The process harness both the study and the bench kits run their servers with.
    "iweblens.harness": (*IN_PROCESS, *KITS, CLI, *PIXELS, *WEB, *PLOTTING),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Every module an ``import`` statement of the file names (absolute imports only)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; this package imports absolutely"
            names.add(node.module or "")
    return names


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_covered_by_a_rule() -> None:
    uncovered = [
        module_name(path)
        for path in MODULES
        if not any(under(module_name(path), prefix) for prefix in [*FORBIDDEN, CLI])
        and module_name(path) != "iweblens"
    ]
    assert uncovered == []


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_imports_follow_the_arrows(path: Path) -> None:
    name = module_name(path)
    forbidden = [
        prefix for owner, prefixes in FORBIDDEN.items() if under(name, owner) for prefix in prefixes
    ]
    broken = sorted(
        imported
        for imported in imported_names(path)
        if any(under(imported, prefix) for prefix in forbidden)
    )
    assert broken == [], f"{name} imports {broken}"


def test_nothing_outside_the_command_line_imports_it() -> None:
    offenders = {
        module_name(path): sorted(n for n in imported_names(path) if under(n, CLI))
        for path in MODULES
        if not under(module_name(path), CLI)
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_command_line_imports_jobs_only_when_they_run() -> None:
    # At module level, cli/ may import the settings and itself; everything else inside ``run``.
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        eager = {n for n in imported_names(path, top_level_only=True) if under(n, "iweblens")} - {
            "iweblens.config",
            "iweblens.cli",
        }
        assert eager == set(), f"{module_name(path)} imports {sorted(eager)} at module level"


PACKAGES = sorted(module_name(path) for path in PACKAGE.rglob("__init__.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_states_its_public_names(package: str) -> None:
    module = importlib.import_module(package)
    if package == "iweblens":
        assert isinstance(module.__version__, str)
        return
    public = module.__all__
    assert sorted(set(public)) == sorted(public), "duplicates in __all__"
    missing = [name for name in public if not hasattr(module, name)]
    assert missing == []


def test_serve_imports_no_study_load_bench_or_plotting(model_paths: object) -> None:
    # Python reports every import of the server process on stderr.
    server = ServerProcess(env={"PYTHONPROFILEIMPORTTIME": "1"})
    try:
        server.wait_ready()
        photo = sorted(IMAGES_DIR.glob("*.jpg"))[0]
        with photo.open("rb") as handle:
            answer = requests.post(
                f"{server.url}/api/object_detection", files={"image": handle}, timeout=60
            )
        assert answer.status_code == 200
    finally:
        server.stop()
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in server.log().splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert {"iweblens.service.app", "uvicorn", "cv2"} <= imported  # the report is complete
    unwanted = sorted(
        name
        for name in imported
        if any(under(name, prefix) for prefix in (*KITS, *PLOTTING, "iweblens.cli.study"))
    )
    assert unwanted == []
