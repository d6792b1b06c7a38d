"""minibert installs as a package: the wheel declares its dependencies, extras and commands, and holds every module.

One wheel is built (pip, offline, with the environment's setuptools) from a copy of the sources in a temporary
folder, so the build leaves nothing in the repository; it takes a few seconds. The pins in requirements*.txt, which
`make` and CI install, must fit the wheel's lower bounds.
"""

import email
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("minibert", "lora", "quant")
SCRIPTS = tuple(sorted(p.name for p in REPO.glob("train*.py")))  # train.py and the train_*.py files it imports
RUNTIME = {"torch", "tokenizers", "datasets", "numpy", "safetensors", "tqdm", "matplotlib"}
EXTRAS = {"quant": {"bitsandbytes"}, "test": {"pytest", "transformers", "peft"}, "docs": {"nbclient", "nbformat",
                                                                                          "ipykernel"}}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    shutil.copy(REPO / "pyproject.toml", source)
    for script in SCRIPTS:
        shutil.copy(REPO / script, source)
    for package in PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(out), str(source)], check=True, capture_output=True, text=True)
    (built,) = out.glob("minibert-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if re.fullmatch(rf"minibert-[^/]+\.dist-info/{name}", n)]
    return wheel.read(path).decode()


def requirements(wheel: zipfile.ZipFile) -> dict[str | None, dict[str, Requirement]]:
    """The wheel's Requires-Dist, by extra (None: the runtime dependencies)."""
    by_extra: dict[str | None, dict[str, Requirement]] = {}
    for line in email.message_from_string(dist_info(wheel, "METADATA")).get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        extra = re.search(r"extra == \"(\w+)\"", str(requirement.marker or ""))
        by_extra.setdefault(extra and extra[1], {})[requirement.name] = requirement
    return by_extra


def test_metadata_lists_dependencies_and_extras(wheel):
    """METADATA requires the runtime packages and offers the quant, test and docs extras, each with a lower bound."""
    by_extra = requirements(wheel)
    assert set(by_extra.pop(None)) == RUNTIME
    assert {extra: set(names) for extra, names in by_extra.items()} == EXTRAS
    metadata = email.message_from_string(dist_info(wheel, "METADATA"))
    assert set(metadata.get_all("Provides-Extra")) == set(EXTRAS)
    for names in requirements(wheel).values():
        for requirement in names.values():
            assert any(spec.operator == ">=" for spec in requirement.specifier), requirement


def test_pinned_versions_fit_the_lower_bounds(wheel):
    """Every pin of requirements.txt / requirements-test.txt satisfies the wheel's requirement on that package, and
    every package the wheel requires is pinned there (so `make` tests what the wheel allows)."""
    pins = {}
    for file in ("requirements.txt", "requirements-test.txt"):
        for line in (REPO / file).read_text().splitlines():
            if "==" in line and not line.startswith(("#", "-")):
                requirement = Requirement(line.split("#")[0])
                pins[requirement.name] = next(iter(requirement.specifier)).version
    wanted = {name: r for names in requirements(wheel).values() for name, r in names.items()}
    assert set(wanted) - set(EXTRAS["docs"]) <= set(pins)
    for name, requirement in wanted.items():
        if name in pins:
            assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])


def test_entry_points_name_the_two_commands(wheel):
    """entry_points.txt installs minibert-train (train:cli) and minibert-predict (minibert.predict:cli)."""
    text = dist_info(wheel, "entry_points.txt")
    scripts = text.split("[console_scripts]", 1)[1].split("[", 1)[0]
    commands = dict(line.replace(" ", "").split("=", 1) for line in scripts.splitlines() if "=" in line)
    assert commands == {"minibert-train": "train:cli", "minibert-predict": "minibert.predict:cli"}


def test_wheel_holds_the_scripts_and_every_package_module(wheel):
    """train.py, every train_*.py beside it and each .py file of minibert/ (minibert/training/ included), lora/,
    quant/ are in the wheel; the tests are not."""
    names = set(wheel.namelist())
    assert set(SCRIPTS) <= names
    for package in PACKAGES:
        modules = {p.relative_to(REPO).as_posix() for p in (REPO / package).rglob("*.py")}
        assert f"{package}/__init__.py" in modules and modules <= names, sorted(modules - names)
    assert not any(name.startswith("tests/") for name in names)
