"""deploy/kubernetes/, checked without a cluster: every manifest against the Kubernetes API
schemas (``kubernetes-validate``, which bundles them), and every container's command and
variables against the real ``switchboard`` commands, with the values the ConfigMap, the
Secret and the downward API would give them. Then what a deployment on many hosts needs:
stable names where order matters, readiness on /health, a disruption budget, no session
affinity, resource requests, the store named by one setting, secrets only from the Secret.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml
from click.core import ParameterSource

from switchboard import parts
from switchboard.broker.broker import BrokerConfig
from switchboard.gateway.config import GatewayConfig
from switchboard.shared.config import from_options
from tests.support.commands import leaf_command

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
#: The Kubernetes API version the manifests are checked against (an oldest supported one:
#: a manifest valid here is valid on the newer ones these kinds have not changed in).
KUBERNETES = "1.30.0"
#: What the Secret holds in a deployment (created by hand: see kustomization.yaml).
SECRET = {"jwt-secret": "x" * 64, "store": "postgresql://chat:pw@db.example.com:5432/chat"}


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in sorted(MANIFESTS.glob("*.yaml"))
            if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    return {**of_kind("Deployment"), **of_kind("StatefulSet")}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def config() -> dict[str, str]:
    (cm,) = of_kind("ConfigMap").values()
    return dict(cm["data"])


def environment(workload: dict[str, Any], pod: str) -> dict[str, str]:
    """The container's variables as the kubelet resolves them for pod ``pod``."""
    fields = {"metadata.name": pod, "status.podIP": "10.1.2.3"}
    env: dict[str, str] = {}
    for item in container(workload)["env"]:
        source = item.get("valueFrom", {})
        if "configMapKeyRef" in source:
            value = config()[source["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in source:
            value = SECRET[source["secretKeyRef"]["key"]]
        elif "fieldRef" in source:
            value = fields[source["fieldRef"]["fieldPath"]]
        else:
            value = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], item["value"])
        env[item["name"]] = value
    return env


def configs_of(args: list[str]) -> list[type[Any]]:
    """The config classes the command ``switchboard ARGS`` builds from its options."""
    if args[0] == "service":
        return [parts.ServiceRuntime, parts.service_module(args[1]).Config]
    return [{"gateway": GatewayConfig, "broker": BrokerConfig}[args[0]]]


def pods(name: str, workload: dict[str, Any]) -> list[str]:
    if workload["kind"] == "StatefulSet":
        return [f"{name}-{i}" for i in range(workload["spec"]["replicas"])]
    return [f"{name}-7d4b9c-x2x4z"]


# -- syntax -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, doc", documents(),
                         ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in documents()])
def test_every_manifest_is_valid_against_the_kubernetes_api_schema(name: str,
                                                                   doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_validator_refuses_what_the_api_would() -> None:
    _, doc = next((n, d) for n, d in documents() if d["kind"] == "Deployment")
    wrong = yaml.safe_load(yaml.safe_dump(doc))
    wrong["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES, strict=True)
    wrong = yaml.safe_load(yaml.safe_dump(doc))
    wrong["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert [i["name"] for i in kustomization["images"]] == ["switchboard"]


# -- the commands -----------------------------------------------------------------------------
def test_every_command_and_variable_is_an_option_of_its_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, workload in workloads().items():
        spec = container(workload)
        assert spec["image"] == "switchboard" and "command" not in spec  # the ENTRYPOINT
        for pod in pods(name, workload):
            env = environment(workload, pod)
            ours = {k: v for k, v in env.items() if k.startswith("SWITCHBOARD_")}
            assert set(env) - set(ours) <= {"POD_IP"}, f"{name}: {set(env) - set(ours)}"
            command, ctx = leaf_command(spec["args"], ours, monkeypatch)
            envvars = {p.envvar: p.name for p in command.params
                       if isinstance(p, click.Option) and isinstance(p.envvar, str)}
            for key in ours:
                assert key in envvars, f"{name}: {key} is no option of `switchboard " \
                    f"{' '.join(spec['args'])}`"
                source = ctx.get_parameter_source(envvars[key])
                assert source is ParameterSource.ENVIRONMENT, f"{name}: {key} not applied"
            # The values pass the configs' own checks too (exit 2 otherwise).
            for config_class in configs_of(spec["args"]):
                from_options(config_class, ctx.params)


def test_every_config_key_is_read_by_some_part() -> None:
    read = {item["valueFrom"]["configMapKeyRef"]["key"]
            for workload in workloads().values() for item in container(workload)["env"]
            if "configMapKeyRef" in item.get("valueFrom", {})}
    assert read == set(config())


def test_ordered_parts_are_statefulsets_and_every_list_names_their_pods() -> None:
    sets = of_kind("StatefulSet")
    assert set(sets) == {"broker", "room"}
    brokers = pods("broker", sets["broker"])
    assert config()["SWITCHBOARD_BROKER_PUB"].split(",") == [
        f"tcp://{b}.broker:5550" for b in brokers]
    assert config()["SWITCHBOARD_BROKER_SUB"].split(",") == [
        f"tcp://{b}.broker:5551" for b in brokers]
    rooms = pods("room", sets["room"])
    # The StatefulSet's pods are the first of the configured instances; the rest are spares
    # it can be scaled up to, live, and every gateway knows their endpoints too.
    configured = config()["SWITCHBOARD_ROOM_INSTANCES"].split(",")
    assert configured[:len(rooms)] == rooms and len(configured) > len(rooms)
    assert configured == [f"room-{i}" for i in range(len(configured))]
    services = dict(item.split("=", 1) for item in config()["SWITCHBOARD_SERVICES"].split(","))
    assert {name: services[name] for name in configured} == {
        name: f"tcp://{name}.room:5562" for name in configured}
    for name, statefulset in sets.items():
        headless = of_kind("Service")[statefulset["spec"]["serviceName"]]
        assert headless["spec"]["clusterIP"] == "None", name


def test_every_endpoint_names_a_service_and_a_port_it_has() -> None:
    services = of_kind("Service")
    endpoints = [*config()["SWITCHBOARD_BROKER_PUB"].split(","),
                 *config()["SWITCHBOARD_BROKER_SUB"].split(","),
                 *(item.split("=", 1)[1] for item in config()["SWITCHBOARD_SERVICES"].split(","))]
    for endpoint in endpoints:
        match = re.fullmatch(r"tcp://(?:([a-z0-9-]+)\.)?([a-z0-9-]+):(\d+)", endpoint)
        assert match, endpoint
        service = services[match[2]]
        assert int(match[3]) in {p["port"] for p in service["spec"]["ports"]}, endpoint
        if match[1]:  # a pod of a StatefulSet, through its headless Service
            assert match[1].rsplit("-", 1)[0] == match[2], endpoint
        selector = service["spec"]["selector"]["app.kubernetes.io/name"]
        workload = workloads()[selector]
        binds = {v for k, v in environment(workload, pods(selector, workload)[0]).items()
                 if k in ("SWITCHBOARD_BIND", "SWITCHBOARD_PUBLISH_BIND",
                          "SWITCHBOARD_SUBSCRIBE_BIND")}
        assert f"tcp://0.0.0.0:{match[3]}" in binds, endpoint


# -- what many hosts need ---------------------------------------------------------------------
def test_gateways_are_ready_on_health_and_spread_without_affinity() -> None:
    gateway = workloads()["gateway"]
    spec = container(gateway)
    env = environment(gateway, pods("gateway", gateway)[0])
    assert spec["readinessProbe"]["httpGet"] == {"path": "/health", "port": int(
        env["SWITCHBOARD_PORT"])}
    assert gateway["spec"]["replicas"] >= 2
    (budget,) = of_kind("PodDisruptionBudget").values()
    assert budget["spec"]["selector"] == gateway["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] < gateway["spec"]["replicas"]
    service = of_kind("Service")["gateway"]
    assert service["spec"]["sessionAffinity"] == "None"
    assert service["spec"]["ports"][0]["targetPort"] == int(env["SWITCHBOARD_PORT"])
    (ingress,) = of_kind("Ingress").values()
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "gateway"
    annotations = ingress["metadata"].get("annotations", {})
    assert not [k for k in annotations if "affinity" in k or "sticky" in k]
    # Kubernetes waits longer than the gateway's own drain before it kills the pod.
    assert gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > float(
        env["SWITCHBOARD_SHUTDOWN_GRACE"])


def test_every_container_requests_resources_and_runs_unprivileged() -> None:
    for name, workload in workloads().items():
        spec = container(workload)
        assert {"cpu", "memory"} <= set(spec["resources"]["requests"]), name
        assert "memory" in spec["resources"]["limits"], name
        assert workload["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], name
        assert spec["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert "readinessProbe" in spec and "livenessProbe" in spec, name


def test_postgresql_is_named_by_one_setting_and_secrets_come_from_the_secret() -> None:
    secret_refs: dict[str, set[str]] = {}
    for name, workload in workloads().items():
        for item in container(workload)["env"]:
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["name"] == "switchboard"
                secret_refs.setdefault(item["name"], set()).add(name)
            assert "SECRET" not in item["name"] or ref is not None, (name, item["name"])
    assert secret_refs == {"SWITCHBOARD_STORE": {"room", "moderation"},
                           "SWITCHBOARD_JWT_SECRET": {"auth", "gateway"}}
    assert not of_kind("Secret")  # no secret in git
    assert not any("postgresql://" in value for value in config().values())
