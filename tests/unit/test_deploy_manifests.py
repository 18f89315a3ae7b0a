"""Everything in deploy/ is valid, offline: the compose files against the Compose Specification's
schema, the Helm chart linted and rendered by Helm's own Go SDK (``helm-python-sdk``) and every
object it renders against the Kubernetes schemas (``kubernetes-validate``); every variable a
process is given is documented and read by the real configuration, no secret value is written in,
and every bot's command line is a ``heedful run`` the real CLI parser accepts.

The validators come with the ``dev`` extra (``make test`` installs it); without one, its tests are
skipped, saying which package is missing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml

from bots import runner
from bots.cli import ShardSlice, app
from bots.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "heedful"
COMPOSE_FILES = [DEPLOY / "compose.yaml", DEPLOY / "compose.scale.yaml"]
KUBERNETES_VERSIONS = ("1.25.0", "1.37.0")  # the chart's kubeVersion floor, and the newest schemas shipped

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|STORE_URL")
"""Variables whose value is (or holds) a secret: only ever a reference, never the value."""
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
SECRET_LOOKING = re.compile(r"xox[abp]-|xapp-|\d{6,}:[A-Za-z0-9_-]{30,}|[A-Za-z0-9_-]{24}\.[A-Za-z0-9_-]{6}\.")


def validator(module: str, package: str) -> Any:
    return pytest.importorskip(module, reason=f"{package} is not installed (the dev extra: pip install -e '.[dev]')")


# -- what the documentation names ---------------------------------------------------------------------


def documented_variables() -> set[str]:
    """The ``HEEDFUL_*`` names in README's "Configuration" section (its table), ``<PLATFORM>`` expanded."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for name in re.findall(r"`(HEEDFUL_[A-Z0-9_<>]+)`", section):
        names |= {name.replace("<PLATFORM>", p.upper()) for p in runner.PLATFORMS}
    return names


def deploy_doc_variables() -> set[str]:
    """Compose-level variables (not heedful's own) that docs/deploy.md names."""
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (REPO / "docs" / "deploy.md").read_text()))


def test_the_readme_table_is_read() -> None:
    names = documented_variables()
    assert {"HEEDFUL_DATA_DIR", "HEEDFUL_DISCORD_TOKEN", "HEEDFUL_SLACK_MANAGE", "HEEDFUL_DISCORD_SHARD_IDS",
            "HEEDFUL_DISCORD_SHARD_COUNT"} <= names


# -- every YAML file ------------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    """Every YAML file in deploy/ but the chart's templates (Go templates: Helm reads them, below)."""
    return sorted(p for p in DEPLOY.rglob("*.y*ml") if "templates" not in p.relative_to(DEPLOY).parts)


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents and all(isinstance(d, dict) for d in documents)


# -- compose ----------------------------------------------------------------------------------------------


def compose(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())  # YAML merge keys (<<: *anchor) resolved
    assert isinstance(data, dict)
    return data


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}`` with ``values`` for the variables."""
    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op") or "", match.group("arg") or ""
        if name in values:
            return values[name]
        assert "?" not in op, f"{name} is required ({arg}) and has no test value"
        return arg if "-" in op else ""

    return INTERPOLATION.sub(one, text)


def fake_secret(name: str) -> str:
    """A value of the right shape for a secret variable (the settings check Slack tokens' prefixes)."""
    return {"HEEDFUL_SLACK_BOT_TOKEN": "xoxb-test", "HEEDFUL_SLACK_APP_TOKEN": "xapp-test"}.get(name, f"test-{name}")


def bot_services(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in data["services"].items() if "heedful" in str(s.get("image", ""))}


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_files_follow_the_compose_specification(path: Path) -> None:
    validator("check_jsonschema", "check-jsonschema")
    import jsonschema

    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    check = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in check.iter_errors(compose(path))]
    assert errors == []


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_variables_are_documented_and_secrets_are_only_referenced(path: Path) -> None:
    data = compose(path)
    documented = documented_variables()
    for name, service in data["services"].items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: write environment as a mapping"
        for key, value in environment.items():
            if key.startswith("HEEDFUL_"):
                assert key in documented, f"{path.name} {name}: {key} is not in README's configuration table"
            if SECRET_NAME.search(key) or SECRET_NAME.search(str(value)):
                text = str(value)
                found = list(INTERPOLATION.finditer(text))
                assert found, f"{name}: {key} holds a secret written into the file"
                for match in found:  # a secret comes from the environment; a default would be a secret in the file
                    if SECRET_NAME.search(match.group("name")):
                        assert "-" not in (match.group("op") or "") or not match.group("arg"), \
                            f"{name}: {key} defaults to a value"
                if "://" in text:  # a URL: its password part is a reference
                    credentials = text.split("://", 1)[1].split("@", 1)[0] if "@" in text else ""
                    assert ":" not in credentials or INTERPOLATION.search(credentials.split(":", 1)[1]), \
                        f"{name}: {key} has a password written in"
    referenced = {m.group("name") for text in strings(data) for m in INTERPOLATION.finditer(text)}
    loose = referenced - documented - deploy_doc_variables()
    assert not loose, f"{path.name} uses variables documented neither in README nor docs/deploy.md: {loose}"
    assert not [s for s in strings(data) if SECRET_LOOKING.search(s)]


def run_arguments(args: list[str]) -> dict[str, Any]:
    """Parse ``heedful ARGS`` with the real CLI (typer's click command), as the container's entry point would;
    returns the ``run`` command's parameters. A bad option raises, as ``heedful`` would exit 2."""
    from typer.main import get_command

    group = get_command(app)
    context = group.make_context("heedful", list(args[:1]))
    name, command, _ = group.resolve_command(context, list(args[:1]))
    assert name == "run" and command is not None, f"not `heedful run`: {args}"
    return dict(command.make_context(name, list(args[1:]), parent=context).params)


def test_the_image_runs_heedful() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["heedful"]' in dockerfile  # so a service's command (k8s: args) is heedful's arguments


def test_the_vllm_image_adds_the_resolver_plugin_to_vllms_own() -> None:
    dockerfile = (DEPLOY / "Dockerfile.vllm").read_text()
    assert re.search(r"^FROM vllm/vllm-openai:", dockerfile, re.M) and "ENTRYPOINT" not in dockerfile
    assert "pip install --no-deps ." in dockerfile and "asyncpg" in dockerfile  # vLLM's torch stays untouched
    assert "COPY heedful_vllm " in dockerfile


def test_run_arguments_parse_like_the_cli() -> None:
    assert not run_arguments(["run"])["platform"]
    assert run_arguments(["run", "--platform", "discord", "--shards", "0,2/3"])["shards"] == ShardSlice([0, 2], 3)
    with pytest.raises(Exception, match="shard ids must be within"):
        run_arguments(["run", "--shards", "3/3"])
    with pytest.raises(Exception, match="is not one of"):
        run_arguments(["run", "--platform", "irc"])


def process_settings(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process would read from exactly ``environment`` (no file, no other HEEDFUL_* variable)."""
    for name in [n for n in os.environ if n.startswith("HEEDFUL_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(REPO / "deploy")  # no heedful.toml here
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def check_process(args: list[str], environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A bot process: its command line parses, its configuration is valid and serves what it names."""
    params = run_arguments(args)
    settings = process_settings(environment, monkeypatch)
    named = [p.value for p in params["platform"] or []]
    assert runner.select_platforms(settings, named) == named, f"{args}: a named platform is not configured"
    return {"platforms": named, "shards": params["shards"], "settings": settings}


def check_slices(slices: list[ShardSlice]) -> None:
    """The Discord processes' slices cover the bot's shards exactly once, all of one count."""
    assert slices, "no Discord process"
    counts = {s.total for s in slices}
    assert len(counts) == 1, f"the processes disagree on the shard count: {counts}"
    ids = sorted(i for s in slices for i in s.ids)
    assert ids == list(range(counts.pop())), f"shards missing or run twice: {ids}"


def test_the_scaled_out_compose_runs_each_platform_on_postgres_and_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    data = compose(DEPLOY / "compose.scale.yaml")
    services = data["services"]
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    vllm = services["vllm"]
    assert vllm["build"]["dockerfile"] == "deploy/Dockerfile.vllm"  # vllm/vllm-openai + the resolver plugin
    assert "--enable-lora" in vllm["command"] and any("/health" in t for t in vllm["healthcheck"]["test"])
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    served = interpolate(vllm["command"][vllm["command"].index("--model") + 1], {})
    values = {"HEEDFUL_POSTGRES_PASSWORD": "pw"}
    plugin = {k: interpolate(str(v), values) for k, v in vllm["environment"].items()}
    assert "heedful_lora_resolver" in plugin["VLLM_PLUGINS"].split(",")
    assert plugin["VLLM_ALLOW_RUNTIME_LORA_UPDATING"].lower() in ("1", "true")
    assert plugin["HEEDFUL_STORE_URL"] == "postgresql://heedful:pw@postgres:5432/heedful"  # the bots' store
    bots = bot_services(data)
    assert set(bots) == {"heedful-discord-0", "heedful-discord-1", "heedful-slack", "heedful-telegram"}
    slices, platforms = [], []
    for name, service in bots.items():
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                         "vllm": {"condition": "service_healthy"}}, name
        environment = {k: interpolate(str(v), values | {k: fake_secret(k)} if SECRET_NAME.search(k)
                                      and "STORE_URL" not in k else values)
                       for k, v in service["environment"].items()}
        process = check_process(service["command"], environment, monkeypatch)
        settings = process["settings"]
        assert settings.store.url is not None and settings.store.url.get_secret_value() == \
            "postgresql://heedful:pw@postgres:5432/heedful"
        assert (settings.model.backend, settings.model.base_url) == ("vllm", "http://vllm:8000/v1")
        assert settings.model.lora_loading == "resolver"  # the bots share no directory with the server
        assert settings.model.id == served, f"{name} asks for a model vllm does not serve"
        platforms += process["platforms"]
        if process["shards"] is not None:
            slices.append(process["shards"])
    assert sorted(platforms) == ["discord", "discord", "slack", "telegram"]
    check_slices(slices)
    assert "<<: *heedful" in (DEPLOY / "compose.scale.yaml").read_text()  # one bot block, not four copies


def test_the_default_compose_stays_one_container(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose(DEPLOY / "compose.yaml")["services"]
    assert list(services) == ["heedful"]
    environment = {k: interpolate(str(v), {}) for k, v in services["heedful"]["environment"].items()}
    settings = process_settings(environment, monkeypatch)
    assert settings.store.url is None and runner.configured_platforms(settings) == []


# -- the Helm chart ---------------------------------------------------------------------------------------


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    helm = validator("helm_python", "helm-python-sdk")
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name="heedful-test", namespace="chat")
    return [doc for name, text in sorted(rendered.items()) if name.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


ALL_PLATFORMS = {"slack": {"enabled": True}, "telegram": {"enabled": True},
                 "discord": {"shardCount": 5, "replicas": 3}, "config": '[discord]\nteach = "admins"\n',
                 "model": {"apiKeySecret": {"name": "model-key"}}}


def test_helm_lints_the_chart_strictly() -> None:
    helm = validator("helm_python", "helm-python-sdk")
    for values in ({}, ALL_PLATFORMS):
        report = helm.lint(str(CHART), values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + list(report["errors"])  # 2: warning
        assert problems == [], problems


@pytest.mark.parametrize("values", [{}, ALL_PLATFORMS], ids=["defaults", "every-platform"])
def test_every_rendered_object_is_valid_kubernetes(values: dict[str, Any]) -> None:
    kubernetes_validate = validator("kubernetes_validate", "kubernetes-validate")
    objects = render(values)
    assert objects
    for version in KUBERNETES_VERSIONS:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): "
                            f"{str(err).splitlines()[0]} at {list(err.path)}")


def containers(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0]
            for o in objects if o["kind"] == "Deployment"}


def container_environment(container: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    environment = {}
    for entry in container["env"]:
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            environment[entry["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            environment[entry["name"]] = entry["value"]
    return environment


@pytest.mark.parametrize("values", [{}, ALL_PLATFORMS], ids=["defaults", "every-platform"])
def test_the_chart_runs_each_process_with_secrets_by_reference_and_probes(
    values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(values)
    assert not [o for o in objects if o["kind"] == "Secret"]  # the chart references Secrets, never makes one
    secrets = {("heedful-store", "url"): "postgresql://heedful:pw@postgres:5432/heedful",
               ("heedful-discord", "token"): "discord-token", ("heedful-telegram", "token"): "123:telegram-token",
               ("heedful-slack", "bot-token"): "xoxb-test", ("heedful-slack", "app-token"): "xapp-test",
               ("model-key", "api-key"): "model-api-key"}
    slices, platforms = [], []
    for name, container in containers(objects).items():
        for entry in container["env"]:
            if SECRET_NAME.search(entry["name"]):
                assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], f"{name}: {entry['name']}"
        environment = container_environment(container, secrets)
        if "HEEDFUL_CONFIG" in environment:  # the ConfigMap's file, as mounted
            config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]["heedful.toml"]
            (path := Path(os.environ.get("TMPDIR", "/tmp")) / f"heedful-chart-{os.getpid()}.toml").write_text(config)
            environment["HEEDFUL_CONFIG"] = str(path)
        unknown = {k for k in environment if k.startswith("HEEDFUL_")} - documented_variables() - {"HEEDFUL_CONFIG"}
        assert not unknown, f"{name}: not in README's configuration table: {unknown}"
        process = check_process(container["args"], environment, monkeypatch)
        assert process["settings"].store.url is not None
        assert process["settings"].model.backend == "openai"  # the chart's default: no model in the pods
        if "HEEDFUL_CONFIG" in environment:
            assert process["settings"].discord.teach == "admins"
        platforms += process["platforms"]
        if process["shards"] is not None:
            slices.append(process["shards"])
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["ports"][0]["containerPort"] == 8321 and environment["HEEDFUL_HTTP_HOST"] == "0.0.0.0"
        assert container["resources"]["requests"] and container["resources"]["limits"]
    for deployment in [o for o in objects if o["kind"] == "Deployment"]:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never one shard or poller twice
    check_slices(slices)
    service = next(o for o in objects if o["kind"] == "Service")
    assert service["spec"]["ports"][0]["port"] == 8321
    expected = ["discord"] * (values.get("discord", {}).get("replicas", 2))
    if values.get("slack", {}).get("enabled"):
        expected += ["slack", "telegram"]
    assert sorted(platforms) == sorted(expected)


def test_the_chart_splits_shards_round_robin_and_refuses_impossible_slices() -> None:
    helm = validator("helm_python", "helm-python-sdk")
    args = {name: c["args"] for name, c in containers(render({"discord": {"shardCount": 5, "replicas": 3}})).items()}
    assert args == {f"heedful-test-discord-{i}": ["run", "--platform", "discord", "--shards", shards]
                    for i, shards in enumerate(["0,3/5", "1,4/5", "2/5"])}
    for bad in ({"replicas": 3, "shardCount": 2}, {"replicas": 0, "shardCount": 2}):
        with pytest.raises(helm.HelmError, match=r"discord\.replicas must be within"):
            render({"discord": bad})
    with pytest.raises(helm.HelmError, match=r"store\.urlSecret\.name"):
        render({"store": {"urlSecret": {"name": ""}}})


def test_the_charts_values_hold_no_secret() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert not [s for s in strings(values) if SECRET_LOOKING.search(s) or ("://" in s and "@" in s)]

    def walk(node: Any, path: str = "") -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{path}.{key}")
        else:
            yield path

    for path in walk(values):
        if re.search(r"token|password|apikey|api_key", path, re.I) and not re.search(r"Secret\.", path):
            pytest.fail(f"values{path} looks like a secret value: put it in a Secret and name the Secret")
