"""docker/kubernetes/: every manifest is valid against the Kubernetes schemas (kubernetes-validate,
offline, strict: an unknown field is an error), and the manifests agree with each other and with
the code (names, labels, ports, the queue KEDA watches, the grace period, the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from redis import Redis
from rq import Queue

from scriptpool.coordinator.cli.main import build_parser
from scriptpool.core.defaults import DEFAULT_QUEUE
from scriptpool.sandbox.limits import MAX_LIMITS
from tests.conftest import REPO

MANIFESTS = REPO / "docker" / "kubernetes"
KUBERNETES_VERSION = "1.34.0"
NOT_IN_KUBERNETES_SCHEMAS = {"Kustomization", "ScaledObject"}  # kustomize's and KEDA's own kinds


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        found.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


def _one(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [doc for _, doc in _documents() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return doc


def _container(deployment: str) -> dict[str, Any]:
    (container,) = _one("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _pod_labels(deployment: str) -> dict[str, str]:
    labels: dict[str, str] = _one("Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
    return labels


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize(
    "path_and_doc",
    [(p, d) for p, d in _documents() if d["kind"] not in NOT_IN_KUBERNETES_SCHEMAS],
    ids=lambda pd: f"{pd[0].name}:{pd[1]['kind']}:{pd[1]['metadata']['name']}",
)
def test_each_manifest_is_valid_kubernetes(path_and_doc: tuple[Path, dict[str, Any]]) -> None:
    kubernetes_validate.validate(path_and_doc[1], KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_an_unknown_field() -> None:
    """The control for the test above."""
    deployment = _one("Deployment", "scriptpool-worker")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 960
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = [doc for _, doc in _documents() if doc["kind"] == "Kustomization"]
    others = {path.name for path, doc in _documents() if doc["kind"] != "Kustomization"}
    assert set(kustomization["resources"]) == others


def test_services_and_budgets_select_the_coordinator_pods() -> None:
    labels = _pod_labels("scriptpool-coordinator")
    assert _matches(_one("Service", "scriptpool-coordinator")["spec"]["selector"], labels)
    budget = _one("PodDisruptionBudget", "scriptpool-coordinator")
    assert _matches(budget["spec"]["selector"]["matchLabels"], labels)
    ports = {port["name"]: port["containerPort"] for port in _container("scriptpool-coordinator")["ports"]}
    for port in _one("Service", "scriptpool-coordinator")["spec"]["ports"]:
        assert port["targetPort"] in ports


def test_the_coordinator_is_probed_over_grpc_health_and_runs_unprivileged() -> None:
    container = _container("scriptpool-coordinator")
    grpc_port = {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port
    pod = _one("Deployment", "scriptpool-coordinator")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_workers_reach_the_coordinator_service_on_its_grpc_port() -> None:
    config = _one("ConfigMap", "scriptpool-config")["data"]
    host, port = config["SCRIPTPOOL_COORDINATOR"].rsplit(":", 1)
    service = _one("Service", host)
    assert int(port) in [p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert config["SCRIPTPOOL_QUEUE"] == DEFAULT_QUEUE


def test_worker_commands_and_probes_are_commands_scriptpool_accepts() -> None:
    container = _container("scriptpool-worker")
    for argv in (
        container["args"],
        *(container[p]["exec"]["command"][1:] for p in ("readinessProbe", "livenessProbe")),
    ):
        build_parser().parse_args(argv)  # SystemExit (a failure) if a flag does not exist
    assert build_parser().parse_args(container["readinessProbe"]["exec"]["command"][1:]).check


def test_a_stopping_worker_pod_has_time_to_finish_the_longest_job() -> None:
    pod = _one("Deployment", "scriptpool-worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= MAX_LIMITS.wall_time_ms / 1000


def test_the_worker_keeps_exactly_the_capability_the_jail_needs() -> None:
    security = _container("scriptpool-worker")["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert security["allowPrivilegeEscalation"] is False


def test_keda_scales_the_worker_deployment_on_the_rq_queue() -> None:
    scaled = _one("ScaledObject", "scriptpool-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert _one("Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    assert 0 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    rq_queue_key = Queue(DEFAULT_QUEUE, connection=Redis()).key  # RQ's own name for the list (no I/O)
    assert trigger["metadata"]["listName"] == rq_queue_key
    assert int(trigger["metadata"]["listLength"]) >= 1
    # The address variable KEDA reads comes from the target's container environment.
    secret = _one("Secret", "scriptpool-redis")["stringData"]
    env_from = [ref["secretRef"]["name"] for ref in _container("scriptpool-worker")["envFrom"] if "secretRef" in ref]
    assert "scriptpool-redis" in env_from and trigger["metadata"]["addressFromEnv"] in secret


def _policy_for(component: str) -> dict[str, Any]:
    labels = _pod_labels(f"scriptpool-{component}")
    (policy,) = [
        doc
        for _, doc in _documents()
        if doc["kind"] == "NetworkPolicy"
        and doc["spec"]["podSelector"]
        and _matches(doc["spec"]["podSelector"]["matchLabels"], labels)
    ]
    return policy


def test_a_default_deny_policy_covers_every_pod() -> None:
    (deny,) = [d for _, d in _documents() if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"] == {}]
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny["spec"]


def test_workers_may_reach_only_redis_the_coordinator_and_dns() -> None:
    egress = _policy_for("worker")["spec"]["egress"]
    reached = set()
    for rule in egress:
        (peer,) = rule["to"]
        ports = {(p["port"], p["protocol"]) for p in rule["ports"]}
        labels = peer.get("podSelector", {}).get("matchLabels", {})
        if _matches(labels, _pod_labels("scriptpool-coordinator")) and labels:
            grpc = {p["name"]: p["containerPort"] for p in _container("scriptpool-coordinator")["ports"]}["grpc"]
            assert ports == {(grpc, "TCP")}
            reached.add("coordinator")
        elif labels.get("app.kubernetes.io/name") == "redis":
            assert ports == {(6379, "TCP"), (26379, "TCP")}
            reached.add("redis")
        elif labels.get("k8s-app") == "kube-dns":
            assert {port for port, _ in ports} == {53}
            reached.add("dns")
        else:
            raise AssertionError(f"workers may reach something else: {rule}")
    assert reached == {"coordinator", "redis", "dns"}


def test_the_manifests_name_no_variable_the_code_does_not_read() -> None:
    sources = "".join(
        (REPO / path).read_text()
        for path in ("coordinator/settings.py", "workers/settings.py", "proto/scriptpool/core/durability.py")
    )
    names = set(_one("ConfigMap", "scriptpool-config")["data"])
    names |= {n for n in _one("Secret", "scriptpool-redis")["stringData"] if n != "REDIS_ADDRESS"}  # that one is KEDA's
    for name in names:
        assert f'"{name}"' in sources, f"{name} is set for the pods but no settings module reads it"
