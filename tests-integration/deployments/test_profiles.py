"""Static checks of the deployment profiles (no Docker engine needed).

Each compose file is parsed and checked against the configuration the code
declares: every ``QR_*`` setting must be able to reach the vLLM container,
every key documented in a profile must be a real setting, images are pinned,
health checks gate start-up, records land on a volume, and no secret is
committed.
"""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

# Keys an .env.example may hold besides QR_* settings and vLLM's own VLLM_*
# variables: compose reads them for `command:`/`ports:`, huggingface_hub
# reads HF_TOKEN.
NON_QR_KEYS = frozenset(
    {"MODEL", "HF_TOKEN", "HOST_PORT", "DTYPE", "GPU_MEMORY_UTILIZATION", "MAX_MODEL_LEN"}
)
SECRET_KEY = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD)$")
# Values that are visibly not a real secret.
PLACEHOLDER = re.compile(r"^(|CHANGE_ME|<[^>]*>|your[-_].*)$")
COMPOSE_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?::?[-?][^}]*)?\}")


def _vllm_service(deploy: Any, profile: Path) -> tuple[str, dict[str, Any]]:
    compose = deploy.load_compose(profile)
    vllm = deploy.services_built_from(compose, profile, "Dockerfile.vllm")
    assert len(vllm) == 1, f"{profile.name}: expected one service built from Dockerfile.vllm"
    return next(iter(vllm.items()))


def _settings_from_env(
    deploy: Any, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Instantiate every settings class from ``env`` exactly as the container would."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    built = {cls.__name__: cls(_env_file=None) for cls in deploy.settings_classes()}
    for key in env:
        monkeypatch.delenv(key)
    return built


def test_layout(deploy: Any) -> None:
    names = {p.name for p in deploy.profiles}
    assert {"_template", "urandom", "firefly-1"} <= names
    for profile in deploy.profiles:
        for required in ("docker-compose.yml", ".env.example", "README.md"):
            assert (profile / required).is_file(), f"{profile.name}/{required} is missing"
    assert (deploy.deployments / "README.md").is_file()


def test_env_files_are_git_ignored(deploy: Any) -> None:
    paths = [f"deployments/{p.name}/.env" for p in deploy.profiles]
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths],
        cwd=deploy.root,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 128:
        pytest.skip(f"not a git checkout: {result.stderr.strip()}")
    ignored = set(result.stdout.split())
    assert ignored == set(paths), f"not ignored: {sorted(set(paths) - ignored)}"


def test_compose_build_contexts_and_dockerfiles_exist(deploy: Any, profile: Path) -> None:
    compose = deploy.load_compose(profile)
    services = compose.get("services")
    assert isinstance(services, dict)
    assert services, f"{profile.name}: no services"
    for name, service in services.items():
        dockerfile = deploy.dockerfile_of(service, profile)
        assert dockerfile is not None, f"{profile.name}/{name}: built images only"
        assert dockerfile.parent.is_dir()
        assert dockerfile.is_file(), f"{profile.name}/{name}: {dockerfile} does not exist"
        context = (profile / service["build"]["context"]).resolve()
        assert context == deploy.root, f"{profile.name}/{name}: context must be the repo root"


def test_compose_images_are_pinned(deploy: Any, profile: Path) -> None:
    for name, service in deploy.load_compose(profile)["services"].items():
        image = service.get("image", "")
        repository, _, tag = image.rpartition(":")
        assert repository, f"{profile.name}/{name}: image {image!r} has no tag"
        assert tag != "latest", f"{profile.name}/{name}: image {image!r} is not pinned"
        assert re.search(r"\d", tag), f"{profile.name}/{name}: tag {tag!r} is not a version"


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


@pytest.mark.parametrize(
    ("dockerfile", "base", "packages"),
    [
        ("Dockerfile.vllm", "vllm/vllm-openai", {"qr-core", "qr-entropy", "qr-vllm"}),
        ("Dockerfile.entropy-server", "python", {"qr-entropy-server"}),
    ],
)
def test_dockerfile_pins_base_and_installs_local_packages(
    deploy: Any, dockerfile: str, base: str, packages: set[str]
) -> None:
    instructions = _dockerfile_instructions(deploy.docker_dir / dockerfile)
    bases = [args for word, args in instructions if word == "FROM"]
    assert len(bases) == 1
    repository, _, tag = bases[0].split()[0].partition(":")
    assert repository == base
    assert tag
    assert tag != "latest"
    assert re.match(r"v?\d+\.\d+\.\d+", tag), f"{dockerfile}: base tag {tag!r} not a full version"
    copied = set()
    for word, args in instructions:
        if word == "COPY":
            sources = [a for a in args.split()[:-1] if not a.startswith("--")]
            for source in sources:
                assert (deploy.root / source).exists(), f"{dockerfile}: COPY {source} missing"
                if source.startswith("packages/"):
                    copied.add(source.split("/")[1])
    assert copied == packages
    # The per-Dockerfile ignore file keeps the repository-root context small:
    # it excludes everything ("*") and re-includes what COPY needs.
    ignore = (deploy.docker_dir / f"{dockerfile}.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"
    included = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for word, args in instructions:
        if word == "COPY":
            for source in [a for a in args.split()[:-1] if not a.startswith("--")]:
                assert any(source == i or source.startswith(f"{i}/") for i in included), (
                    f"{dockerfile}: COPY {source} is excluded from the build context"
                )


def test_every_setting_reaches_the_vllm_service(deploy: Any, profile: Path) -> None:
    name, service = _vllm_service(deploy, profile)
    env_file = service.get("env_file")
    entries = env_file if isinstance(env_file, list) else [env_file]
    paths = [e["path"] if isinstance(e, dict) else e for e in entries]
    assert ".env" in paths, f"{profile.name}/{name}: .env is not an env_file"
    environment = service.get("environment") or {}
    keys = (
        list(environment)
        if isinstance(environment, dict)
        else [item.split("=", 1)[0] for item in environment]
    )
    # A QR_* key here would silently override the value in .env.
    assert not [k for k in keys if k.startswith("QR_")], f"{profile.name}/{name}: {keys}"


def test_env_example_keys_are_real_settings(deploy: Any, profile: Path) -> None:
    index = deploy.settings_index()
    lines = deploy.parse_env_file(profile / ".env.example")
    assert lines
    unknown = []
    vllm_names: frozenset[str] | None = None
    for line in lines:
        if line.key.startswith("QR_"):
            known = line.key in index
        elif line.key.startswith("VLLM_"):
            vllm_names = vllm_names or deploy.vllm_env_names()
            known = line.key in vllm_names
        else:
            known = line.key in NON_QR_KEYS
        if not known:
            unknown.append(f"line {line.lineno}: {line.key}")
    assert not unknown, f"{profile.name}/.env.example: not a setting: {unknown}"
    active = [line.key for line in lines if line.active]
    assert len(active) == len(set(active)), f"{profile.name}: a key is set twice"


def test_env_example_format_is_read_alike_by_compose_and_dotenv(profile: Path) -> None:
    # Quotes and trailing comments are parsed differently by docker compose and
    # python-dotenv; plain values mean the same everywhere.
    for lineno, raw in enumerate((profile / ".env.example").read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{profile.name}/.env.example:{lineno}: not KEY=value"
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"{profile.name}:{lineno}: bad key {key!r}"
        assert not value.startswith(("'", '"')), f"{profile.name}:{lineno}: quoted value"
        assert " #" not in value, f"{profile.name}:{lineno}: comment after a value"
        assert value == value.strip(), f"{profile.name}:{lineno}: blanks around the value"


def test_env_example_values_validate(
    deploy: Any, profile: Path, clean_qr_env: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in deploy.env_file_values(profile).items() if k.startswith("QR_")}
    try:
        _settings_from_env(deploy, env, clean_qr_env)
    except ValidationError as exc:
        pytest.fail(f"{profile.name}/.env.example is rejected by the settings: {exc}")


def test_compose_variables_are_documented(deploy: Any, profile: Path) -> None:
    text = (profile / "docker-compose.yml").read_text(encoding="utf-8")
    # Comments may mention variables; only the parsed YAML is interpolated.
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    used = {m["name"] for m in COMPOSE_VARIABLE.finditer(body)}
    documented = {line.key for line in deploy.parse_env_file(profile / ".env.example")}
    assert used <= documented, f"{profile.name}: undocumented {sorted(used - documented)}"


def test_template_documents_every_setting_with_its_default(
    deploy: Any, clean_qr_env: pytest.MonkeyPatch
) -> None:
    index = deploy.settings_index()
    lines = deploy.parse_env_file(deploy.deployments / "_template" / ".env.example")
    documented = {line.key: line for line in lines}
    missing = sorted(set(index) - set(documented))
    assert not missing, f"_template/.env.example does not document {missing}"
    wrong = []
    for line in lines:
        if line.active or not line.key.startswith("QR_"):
            continue
        setting = index[line.key]
        default = setting.settings_class.model_fields[setting.field].default
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        # Every commented line must validate when uncommented exactly as shown.
        clean_qr_env.setenv(line.key, line.value)
        try:
            parsed = getattr(setting.settings_class(_env_file=None), setting.field)
        except ValidationError as exc:
            wrong.append(f"{line.key}={line.value}: rejected when uncommented: {exc}")
            continue
        finally:
            clean_qr_env.delenv(line.key)
        if isinstance(parsed, SecretStr):
            parsed = parsed.get_secret_value()
        if default is None:
            # No value means "unset"; the line shows an example that validates.
            if line.value == "":
                wrong.append(f"{line.key}: unset by default; show a valid example value")
            continue
        same = (
            math.isclose(parsed, default, rel_tol=1e-12, abs_tol=0.0)
            if isinstance(default, float) and isinstance(parsed, float)
            else parsed == default
        )
        if not same:
            wrong.append(f"{line.key}: documented {line.value!r}, default {default!r}")
    assert not wrong, f"_template/.env.example documents wrong defaults: {wrong}"


def test_health_checks_gate_start_up(deploy: Any, profile: Path) -> None:
    compose = deploy.load_compose(profile)
    services = compose["services"]
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test, f"{profile.name}/{name}: no healthcheck"
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert spec == {"condition": "service_healthy"}, f"{profile.name}/{name}"
            assert services[dependency].get("healthcheck"), f"{dependency} has no healthcheck"
    vllm_name, vllm = _vllm_service(deploy, profile)
    assert any("/health" in part for part in vllm["healthcheck"]["test"])
    servers = deploy.services_built_from(compose, profile, "Dockerfile.entropy-server")
    for name, service in servers.items():
        assert "/usr/local/bin/qr-grpc-healthcheck" in service["healthcheck"]["test"]
        assert name in vllm.get("depends_on", {}), f"{vllm_name} does not wait for {name}"


def test_records_land_on_a_named_volume(deploy: Any, profile: Path) -> None:
    compose = deploy.load_compose(profile)
    _, vllm = _vllm_service(deploy, profile)
    record_path = deploy.env_file_values(profile).get("QR_RECORD_PATH", "")
    assert record_path.startswith("/"), f"{profile.name}: QR_RECORD_PATH must be set"
    mounts = {}
    for volume in vllm.get("volumes", []):
        source, _, target = volume.partition(":")
        mounts[target.split(":")[0]] = source
    holders = [t for t in mounts if Path(record_path).is_relative_to(t)]
    assert holders, f"{profile.name}: {record_path} is on no volume of the vLLM service"
    assert mounts[holders[0]] in (compose.get("volumes") or {}), "not a named volume"


def test_no_secret_is_committed(deploy: Any) -> None:
    offenders = []
    for path in deploy.deployments.rglob("*"):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        relative = path.relative_to(deploy.root)
        if "PRIVATE KEY-----" in text:
            offenders.append(f"{relative}: private key")
        if re.search(r"\bhf_[A-Za-z0-9]{30,}", text):
            offenders.append(f"{relative}: Hugging Face token")
        if path.name.startswith(".env") and path.name != ".env.example":
            offenders.append(f"{relative}: real env file")
    for profile in deploy.profiles:
        for line in deploy.parse_env_file(profile / ".env.example"):
            if SECRET_KEY.search(line.key) and not PLACEHOLDER.match(line.value):
                offenders.append(f"{profile.name}: {line.key} holds a non-placeholder value")
    assert not offenders, offenders


def test_urandom_profile_wiring(deploy: Any, clean_qr_env: pytest.MonkeyPatch) -> None:
    profile = deploy.deployments / "urandom"
    compose = deploy.load_compose(profile)
    servers = deploy.services_built_from(compose, profile, "Dockerfile.entropy-server")
    assert len(servers) == 1
    (server,) = servers.values()
    _, vllm = _vllm_service(deploy, profile)
    env = deploy.env_file_values(profile)
    config = _settings_from_env(
        deploy, {k: v for k, v in env.items() if k.startswith("QR_")}, clean_qr_env
    )["EntropyConfig"]
    assert config.entropy_source_type == "quantum_grpc"
    assert config.grpc_mode == "bidi_streaming"
    # The client's socket and the server's socket are the same file, on a
    # volume that both containers mount at the same place.
    assert config.grpc_server_address.startswith("unix://")
    command = server["command"]
    assert command[command.index("--address") + 1] == config.grpc_server_address
    socket_dir = str(Path(config.grpc_server_address.removeprefix("unix://")).parent)
    shared = {v for v in server["volumes"] if v.endswith(f":{socket_dir}")}
    assert shared
    assert shared <= set(vllm["volumes"])


def test_firefly_profile_is_vllm_only_with_custom_protocol(
    deploy: Any, clean_qr_env: pytest.MonkeyPatch
) -> None:
    profile = deploy.deployments / "firefly-1"
    compose = deploy.load_compose(profile)
    assert list(compose["services"]) == [_vllm_service(deploy, profile)[0]]
    env = deploy.env_file_values(profile)
    built = _settings_from_env(
        deploy, {k: v for k, v in env.items() if k.startswith("QR_")}, clean_qr_env
    )
    config = built["EntropyConfig"]
    assert config.entropy_source_type == "quantum_grpc"
    assert config.grpc_method_path == "/qrng.QuantumRNG/GetRandomBytes"
    assert config.grpc_stream_method_path == ""
    assert config.grpc_mode == "unary"
    assert config.grpc_api_key.get_secret_value() == "CHANGE_ME"
    assert config.grpc_tls is True
    sample_counts = [s.sample_count for s in built.values() if hasattr(s, "sample_count")]
    assert sample_counts == [13312]


@pytest.mark.parametrize(
    ("dockerfile", "package"),
    [("Dockerfile.vllm", "qr-vllm"), ("Dockerfile.entropy-server", "qr-entropy-server")],
)
def test_built_images_carry_the_package_version(
    deploy: Any, profile: Path, dockerfile: str, package: str
) -> None:
    module = package.replace("-", "_")
    about = deploy.root / "packages" / package / "src" / module / "__about__.py"
    version = re.search(r'^__version__ = "([^"]+)"$', about.read_text(), re.MULTILINE)
    assert version
    compose = deploy.load_compose(profile)
    for name, service in deploy.services_built_from(compose, profile, dockerfile).items():
        tag = service["image"].rpartition(":")[2]
        assert tag == version[1], f"{profile.name}/{name}: tag {tag}, {package} is {version[1]}"


# Keys of the Compose specification (compose-spec.io) used by services and
# health checks; a misspelt key (`healtcheck`, `env-file`) is ignored by
# nothing and rejected by compose, so it must not reach a user.
TOP_LEVEL_KEYS = {"name", "services", "volumes", "networks", "configs", "secrets", "include"}
SERVICE_KEYS = {
    "build", "command", "container_name", "depends_on", "deploy", "devices", "entrypoint",
    "env_file", "environment", "expose", "extra_hosts", "group_add", "healthcheck", "image",
    "init", "ipc", "labels", "logging", "network_mode", "networks", "ports", "profiles",
    "read_only", "restart", "runtime", "security_opt", "shm_size", "stop_grace_period",
    "stop_signal", "tmpfs", "ulimits", "user", "volumes", "working_dir",
}  # fmt: skip
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval"}
DURATION = re.compile(r"^(\d+(h|m|s|ms|us))+$")


def test_compose_keys_follow_the_compose_spec(deploy: Any, profile: Path) -> None:
    compose = deploy.load_compose(profile)
    assert set(compose) - TOP_LEVEL_KEYS == set()
    for name, service in compose["services"].items():
        unknown = set(service) - SERVICE_KEYS
        assert not unknown, f"{profile.name}/{name}: unknown keys {sorted(unknown)}"
        healthcheck = service["healthcheck"]
        assert set(healthcheck) <= HEALTHCHECK_KEYS, f"{profile.name}/{name}"
        assert healthcheck["test"][0] in ("CMD", "CMD-SHELL")
        for key in ("interval", "timeout", "start_period"):
            assert DURATION.match(str(healthcheck.get(key, "1s"))), f"{name}.{key}"
        assert service.get("restart", "no") in ("no", "always", "on-failure", "unless-stopped")
        for volume in service.get("volumes", []):
            source, _, target = volume.partition(":")
            assert target.startswith("/"), f"{profile.name}/{name}: volume {volume!r}"
            if not source.startswith((".", "/")):
                assert source in (compose.get("volumes") or {}), f"undeclared volume {source}"
