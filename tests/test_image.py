"""The image's contract outside Docker (no engine on CI): the Dockerfile's command and health checks run
against the fakes from the wheel its build stage makes, the compose file, the lock files (SPEC 10)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.fakes.bitrix import FakeBitrix
from tests.fakes.telegram import FAKE_TOKEN, FakeTelegram
from tests.harness import WEBHOOK_CODE
from tests.test_linking import ANNA
from tests.test_smoke import _env, _free_port, b24_server

ROOT = Path(__file__).resolve().parent.parent


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped, one list per FROM."""
    logical, current = [], ""
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    stages: list[list[tuple[str, str]]] = []
    for instruction in logical:
        keyword, _, args = instruction.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), args.strip()))
    return stages


def args_of(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


def image_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    return dict(pair.split("=", 1) for args in args_of(stage, "ENV") for pair in shlex.split(args))


def healthcheck_command(stage: list[tuple[str, str]]) -> list[str]:
    (args,) = args_of(stage, "HEALTHCHECK")
    return json.loads(args.split(" CMD ", 1)[1])


def compose_healthcheck_command() -> list[str]:
    match = re.search(r"^\s+test: (\[.*\])$", (ROOT / "docker-compose.yml").read_text(encoding="utf-8"), re.M)
    assert match, "docker-compose.yml has no one-line healthcheck test"
    return json.loads(match.group(1))[1:]  # after "CMD"


def on_host(argv: list[str]) -> list[str]:
    """An image command with the image's `python` replaced by this interpreter."""
    return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]


def install_what_the_build_stage_installs(tmp_path: Path) -> Path:
    """Copy what the build stage COPYs, build the wheel as its `pip install /src` does, unpack it: site/."""
    build = dockerfile_stages()[0]
    src = tmp_path / "src"
    src.mkdir()
    for args in args_of(build, "COPY"):
        *sources, dest = args.split()
        assert dest.startswith("/src"), args
        for source in sources:
            target = src / dest.removeprefix("/src").strip("/")
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, target)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)  # a pure-Python wheel unpacked is that package installed
    return site


def run_probe(argv: list[str], env: dict[str, str]) -> int:
    return subprocess.run(on_host(argv), env=env, capture_output=True, timeout=30).returncode


def test_the_image_gets_only_the_built_environment_from_the_lock_and_installs_noninteractively() -> None:
    build, final = dockerfile_stages()
    assert all(args.startswith("--from=build ") for args in args_of(final, "COPY")), "the image copies sources"
    assert not args_of(final, "ADD")
    assert any("--require-hashes -r /src/requirements.lock" in args for args in args_of(build, "RUN"))
    installs = [args for stage in (build, final) for args in args_of(stage, "RUN") if "apt-get install" in args]
    assert installs and all("DEBIAN_FRONTEND=noninteractive apt-get install" in args for args in installs)
    assert args_of(final, "USER") == ["bot"] and args_of(final, "WORKDIR") == ["/app"]
    assert image_env(final)["HEALTH_PORT"] == "8080"
    assert json.loads(args_of(final, "CMD")[0]) == ["python", "-m", "bot"]


def test_the_image_command_runs_the_installed_package_from_an_empty_workdir_and_both_health_checks_follow_it(
    tmp_path: Path,
) -> None:
    final = dockerfile_stages()[-1]
    site = install_what_the_build_stage_installs(tmp_path)
    workdir = tmp_path / "app"
    (workdir / "data").mkdir(parents=True)
    port = _free_port()
    tg, b24 = FakeTelegram(), FakeBitrix(webhook_user_id=1, webhook_code=WEBHOOK_CODE)
    b24.add_user(ANNA, "Anna", "Smith")
    b24.set_counters(ANNA, "view_all", expired=3, new_comments=5)
    with tg.serve() as tg_server, b24_server(b24) as b24_url:
        env = _env(tmp_path, tg_server.url, b24_url)
        env.update({name: value for name, value in image_env(final).items() if name != "PATH"})
        env.update(PYTHONPATH=str(site), HEALTH_PORT=str(port), DATABASE_PATH=str(workdir / "data" / "bot.sqlite3"), LOG_LEVEL="DEBUG")
        where = subprocess.run(on_host(["python", "-c", "import bot; print(bot.__file__)"]), cwd=workdir, env=env, capture_output=True, text=True)
        assert where.stdout.startswith(str(site)), where  # the unpacked wheel, not a source tree
        command = json.loads(args_of(final, "CMD")[0])
        log = tmp_path / "bot.log"  # a file, not a pipe nobody reads until the end: the bot never blocks on it
        with log.open("w", encoding="utf-8") as stdout:
            proc = subprocess.Popen(on_host(command), cwd=workdir, env=env, stdout=stdout, stderr=subprocess.STDOUT)
            try:
                tg.push(tg.message(42, "/link 547"))
                linking = tg.wait_for(lambda: len(tg.sent(42)) >= 1 and bool(b24.notifications), timeout=30)
                if linking:
                    (code,) = re.findall(r"Code: (\d{6})", b24.notifications[-1][1])
                    tg.push(tg.message(42, f"/verify {code}"))
                    linking = tg.wait_for(lambda: len(tg.sent(42)) >= 3, timeout=30)
                healthy = run_probe(healthcheck_command(final), env)
                compose_probe = [arg.replace("8080", str(port)) for arg in compose_healthcheck_command()]
                compose_healthy = run_probe(compose_probe, env)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    out = log.read_text(encoding="utf-8")
    assert linking and "Anna Smith" in tg.texts(42)[1], out
    assert healthy == 0 and compose_healthy == 0, out
    assert proc.returncode == 0, out
    assert run_probe(healthcheck_command(final), env) != 0  # nothing answers any more
    assert " DEBUG bot.bitrix: " in out  # LOG_LEVEL=DEBUG shows the bot's own detail...
    assert code not in out and "/verify" not in out  # ...and no update, request body or SQL argument
    for text in tg.texts(42):
        assert text not in out
    assert FAKE_TOKEN not in out and WEBHOOK_CODE not in out


def _compose() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.skipif(_compose() is None, reason="neither `docker compose` nor `docker-compose` is installed")
def test_compose_accepts_the_file_with_its_hardening_and_a_volume_name_of_its_own(tmp_path: Path) -> None:
    for path in ROOT.glob("docker-compose*.yml"):
        shutil.copy(path, tmp_path)
    (tmp_path / ".env").touch()  # env_file must exist
    # The file alone (with docker-compose.override.yml if there is one), then with each other override.
    overrides = [["-f", "docker-compose.yml", "-f", path.name] for path in sorted(ROOT.glob("docker-compose.*.yml")) if path.name != "docker-compose.override.yml"]
    for files in [[], *overrides]:
        result = subprocess.run([*(_compose() or []), *files, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (files, result.stderr)
        for pattern in (
            r"read_only: true",
            r"cap_drop:\s+- ALL",
            r"security_opt:\s+- no-new-privileges:true",
            r"tmpfs:\s+- /tmp",
            r"bot-data:\s+name: bitrix24-counters-bot-data",
            r"stop_grace_period: 30s",
            r"restart: unless-stopped",
        ):
            assert re.search(pattern, result.stdout), (files, pattern)


def pins(name: str) -> dict[str, str]:
    """name -> version for each `name==version` line of a lock file."""
    text = (ROOT / name).read_text(encoding="utf-8")
    return {canonicalize_name(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", text, re.M)}


def test_the_locks_pin_every_dependency_within_pyproject_ranges_and_agree_with_each_other() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime, test = pins("requirements.lock"), pins("requirements-test.lock")
    for requirement in map(Requirement, project["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert requirement.specifier.contains(runtime[name], prereleases=True), (name, runtime[name])
    for requirement in map(Requirement, project["dependencies"] + project["optional-dependencies"]["test"]):
        name = canonicalize_name(requirement.name)
        assert requirement.specifier.contains(test[name], prereleases=True), (name, test[name])
    assert {name: test[name] for name in runtime} == runtime  # CI tests the versions the image runs
    for name in ("requirements.lock", "requirements-test.lock"):
        assert "uv pip compile pyproject.toml" in (ROOT / name).read_text(encoding="utf-8").split("\n", 3)[1], name
