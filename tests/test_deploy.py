"""deploy/: the Kubernetes manifests as `kubectl kustomize` renders them, checked against
Kubernetes' own schemas offline (kubernetes-validate, strict) and KEDA's objects against models
generated from KEDA's published CRDs (cloudcoil-models-keda), then read for what an operator
relies on; the Prometheus alerting rules checked and unit-tested by promtool, and one of them
firing in a real Prometheus that scrapes a real API process."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import redis
import yaml

from reviewscore.core.celery_app import BULK_QUEUE, WORKER_KEY_PREFIX, priority_lists
from reviewscore.core.model_registry import publish_folder
from reviewscore.core.processes import die_with_parent
from reviewscore.core.settings import REPO_ROOT, Settings
from tests.conftest import free_port, stub_model_folder, wait_for

KUBE_DIR = REPO_ROOT / "deploy" / "kubernetes"
PROM_DIR = REPO_ROOT / "deploy" / "prometheus"
# Validated against this Kubernetes release's schemas (shipped inside kubernetes-validate).
KUBERNETES_VERSION = "1.30.0"
# A stop's SIGTERM starts Celery's warm shutdown; the kubelet's SIGKILL must come well after.
GRACE_MARGIN_S = 30
COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]


# ------------------------------------------------------------------ rendering ----


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "KUBERNETES MANIFESTS NOT CHECKED: no kubectl (`make test-tools` installs "
            "Debian's kubernetes-client)"
        )
    rendered = subprocess.run(
        [kubectl, "kustomize", str(KUBE_DIR)], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def is_keda(obj: dict[str, Any]) -> bool:
    return str(obj["apiVersion"]).startswith("keda.sh/")


def test_kustomize_renders_every_process_of_the_compose_stack(
    objects: list[dict[str, Any]],
) -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for component in ("api", "worker", "worker-singles", "beat", "flower"):
        assert ("Deployment", f"reviewscore-{component}") in names
    assert ("Job", "reviewscore-migrate") in names
    assert {("Service", "reviewscore-api"), ("Service", "reviewscore-flower")} <= names
    assert ("ScaledObject", "reviewscore-worker") in names
    # Everything but the Namespace itself lands in it.
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "reviewscore", obj["metadata"]["name"]


def test_every_object_validates_against_the_kubernetes_schema(
    objects: list[dict[str, Any]],
) -> None:
    checked = 0
    for obj in objects:
        if not is_keda(obj):
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            checked += 1
    assert checked == len(objects) - 2  # all but the ScaledObject and its TriggerAuthentication


def test_the_schema_check_catches_a_misspelt_field(objects: list[dict[str, Any]]) -> None:
    api = copy.deepcopy(find(objects, "Deployment", "reviewscore-api"))
    container(api)["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(api, KUBERNETES_VERSION, strict=True)


def keda_round_trip(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as KEDA's CRD models read it: a field they do not know is dropped, a value
    of the wrong type raises, so equality with the input means the CRD accepts it whole."""
    from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication

    model = {"ScaledObject": ScaledObject, "TriggerAuthentication": TriggerAuthentication}
    parsed = model[obj["kind"]].model_validate(obj)
    return parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")


def test_keda_objects_match_kedas_crd(objects: list[dict[str, Any]]) -> None:
    keda = [o for o in objects if is_keda(o)]
    assert {o["kind"] for o in keda} == {"ScaledObject", "TriggerAuthentication"}
    for obj in keda:
        assert keda_round_trip(obj) == obj
    misspelt = copy.deepcopy(find(objects, "ScaledObject", "reviewscore-worker"))
    misspelt["spec"]["minReplicas"] = misspelt["spec"].pop("minReplicaCount")
    assert keda_round_trip(misspelt) != misspelt


# ------------------------------------------------------------------ what operators rely on ----


def test_the_api_is_probed_on_healthz_and_readyz_and_served_by_its_service(
    objects: list[dict[str, Any]],
) -> None:
    api = find(objects, "Deployment", "reviewscore-api")
    main = container(api)
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # /readyz waits up to HEALTH_TIMEOUT_S per check, then pings the workers.
    assert main["readinessProbe"]["timeoutSeconds"] > 2 * Settings().health_timeout_s
    assert {"name": "http", "containerPort": 8000} in main["ports"]
    service = find(objects, "Service", "reviewscore-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_processes_run_the_commands_of_the_compose_stack(objects: list[dict[str, Any]]) -> None:
    api = container(find(objects, "Deployment", "reviewscore-api"))["command"]
    compose_api = COMPOSE["api"]["command"]
    assert api[: len(compose_api) - 2] == compose_api[:-2] and api[-2:] == compose_api[-2:]
    for name in ("worker-singles", "beat"):
        deployed = container(find(objects, "Deployment", f"reviewscore-{name}"))["command"]
        assert deployed == COMPOSE[name]["command"], name
    migrate = find(objects, "Job", "reviewscore-migrate")["spec"]["template"]["spec"]
    assert migrate["containers"][0]["command"] == COMPOSE["migrate"]["command"]


def test_workers_get_their_shutdown_grace_and_signal(objects: list[dict[str, Any]]) -> None:
    config = find(objects, "ConfigMap", "reviewscore-config")["data"]
    grace = float(config["REVIEWSCORE_SHUTDOWN_GRACE_S"])
    assert grace >= Settings().shutdown_grace_s
    worker = find(objects, "Deployment", "reviewscore-worker")
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= (
        grace + GRACE_MARGIN_S
    )
    # `sh -c` without exec would take the SIGTERM and leave Celery to the SIGKILL.
    assert container(worker)["command"][2].startswith("exec celery ")
    assert "-Q singles,bulk" in container(worker)["command"][2]
    singles = find(objects, "Deployment", "reviewscore-worker-singles")
    assert singles["spec"]["replicas"] == 1
    assert singles["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= (
        Settings().singles_timeout_s
    )


def test_exactly_one_beat(objects: list[dict[str, Any]]) -> None:
    beat = find(objects, "Deployment", "reviewscore-beat")
    assert beat["spec"]["replicas"] == 1
    # A rolling update would run the new beat beside the old one.
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    scaled = {o["spec"]["scaleTargetRef"]["name"] for o in objects if o["kind"] == "ScaledObject"}
    assert "reviewscore-beat" not in scaled
    beats = [
        o
        for o in objects
        if o["kind"] == "Deployment"
        and " beat" in " ".join(container(o)["command"])
        and "celery" in container(o)["command"][0]
    ]
    assert beats == [beat]


def refs(node: Any, key: str) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for k, value in node.items():
            if k == key:
                yield from value if isinstance(value, list) else [value]
            else:
                yield from refs(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item, key)


def test_every_secret_and_config_referenced_exists(objects: list[dict[str, Any]]) -> None:
    secrets = {o["metadata"]["name"]: o["stringData"] for o in objects if o["kind"] == "Secret"}
    configs = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    seen = 0
    for obj in objects:
        for ref in [*refs(obj, "secretKeyRef"), *refs(obj, "secretTargetRef")]:
            assert ref["key"] in secrets[ref["name"]], (obj["metadata"]["name"], ref)
            seen += 1
        for ref in refs(obj, "configMapRef"):
            assert ref["name"] in configs
    assert seen >= 10
    # Only Flower is given Flower's password.
    holders = {
        o["metadata"]["name"]
        for o in objects
        for ref in refs(o, "secretKeyRef")
        if ref["key"] == "flower-password"
    }
    assert holders == {"reviewscore-flower"}
    flower = container(find(objects, "Deployment", "reviewscore-flower"))
    assert (
        "--basic-auth=${REVIEWSCORE_FLOWER_USER}:${REVIEWSCORE_FLOWER_PASSWORD}"
        in (flower["command"][2])
    )


def test_disruption_budgets_select_the_pods_they_protect(objects: list[dict[str, Any]]) -> None:
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    protected = set()
    for budget in budgets:
        wanted = budget["spec"]["selector"]["matchLabels"].items()
        matched = [
            d["metadata"]["name"]
            for d in deployments
            if wanted <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, (budget["metadata"]["name"], matched)
        protected.add(matched[0])
    assert protected == {"reviewscore-api", "reviewscore-worker"}
    # minAvailable 1 on the API leaves a drain something to take: it runs more than one.
    assert find(objects, "Deployment", "reviewscore-api")["spec"]["replicas"] >= 2


def test_workers_scale_on_every_list_of_the_bulk_queue(objects: list[dict[str, Any]]) -> None:
    scaled = find(objects, "ScaledObject", "reviewscore-worker")["spec"]
    target = scaled["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "reviewscore-worker")
    find(objects, "Deployment", target["name"])
    # At least one worker at all times: a job's first chunk never waits for a scale-up.
    assert scaled["minReplicaCount"] >= 1
    triggers = scaled["triggers"]
    assert {t["type"] for t in triggers} == {"redis"}
    assert sorted(t["metadata"]["listName"] for t in triggers) == sorted(priority_lists(BULK_QUEUE))
    for trigger in triggers:
        find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])


# ------------------------------------------------------------------ alerting rules ----


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(
            "ALERTING RULES NOT CHECKED: no promtool (`make test-tools` installs Debian's "
            "prometheus)"
        )
    return found


def test_promtool_checks_the_rules() -> None:
    checked = subprocess.run(
        [promtool(), "check", "rules", "alerts.yml"],
        cwd=PROM_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_fire_on_recorded_series() -> None:
    tested = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yml"],
        cwd=PROM_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert has its test.
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((PROM_DIR / "alerts.test.yml").read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert firing == {rule["alert"] for rule in rules}


@dataclass
class LoneApi:
    url: str
    redis_url: str


@pytest.fixture(scope="module")
def lone_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoneApi]:
    """An API process and its embedded Redis, on a migrated SQLite with the stub model
    published, started as `reviewscore run` starts them, and no worker at all."""
    from reviewscore.core.migrate import upgrade
    from reviewscore.shell.runner import Stack

    var_dir = tmp_path_factory.mktemp("var-deploy")
    database_url = f"sqlite:///{var_dir / 'reviewscore.db'}"
    upgrade(database_url)
    models = stub_model_folder(tmp_path_factory)
    publish_folder(models, database_url)
    port = free_port()
    settings = Settings(
        var_dir=var_dir,
        database_url=database_url,
        models_dir=models,
        api_port=port,
        redis_url="",
    )
    stack = Stack(settings, extra_env={"REVIEWSCORE_CHUNK_SIZE": "100"})
    url = f"http://127.0.0.1:{port}"
    try:
        stack.start_redis()
        stack.spawn("api", stack.api_args())
        stack.wait_until("API", lambda: httpx.get(f"{url}/healthz", timeout=2).is_success, 60)
        assert stack.redis is not None
        yield LoneApi(url, stack.redis.url)
    finally:
        stack.stop()


def degraded_on_metrics(api: LoneApi) -> str:
    found = re.search(
        r"^reviewscore_workers_degraded (\S+)$", httpx.get(f"{api.url}/metrics").text, re.M
    )
    assert found, "reviewscore_workers_degraded is not on /metrics"
    return found.group(1)


def test_metrics_say_degraded_while_a_worker_reports_a_model_error(lone_api: LoneApi) -> None:
    assert degraded_on_metrics(lone_api) == "0.0"
    client = redis.Redis.from_url(lone_api.redis_url)
    key = WORKER_KEY_PREFIX + "celery@worker-7:1234"
    # What a worker process whose model failed to load reports (worker/readiness.py).
    state = {"device": None, "models": {}, "error": "the model could not be fetched"}
    client.set(key, json.dumps(state), ex=60)
    try:
        assert degraded_on_metrics(lone_api) == "1.0"
        assert 'reviewscore_worker_processes{state="failed"} 1.0' in (
            httpx.get(f"{lone_api.url}/metrics").text
        )
    finally:
        client.delete(key)
    assert degraded_on_metrics(lone_api) == "0.0"


def prometheus_config(tmp: Path, api_url: str) -> Path:
    """alerts.yml as shipped, but every `for:` cut to 0 s (the expressions are the real ones),
    scraped and evaluated every 2 s (a scrape may take that long on a loaded machine)."""
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "0s"
    (tmp / "rules.yml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "2s"},
        "rule_files": [str(tmp / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "reviewscore-api",
                "static_configs": [{"targets": [api_url.removeprefix("http://")]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    return tmp / "prometheus.yml"


@pytest.fixture
def prometheus(tmp_path: Path, lone_api: LoneApi) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "ALERT NOT FIRED IN A REAL PROMETHEUS: no prometheus binary (`make test-tools` "
            "installs Debian's prometheus)"
        )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    parent = os.getpid()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={prometheus_config(tmp_path, lone_api.url)}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: die_with_parent(signal.SIGTERM, parent),
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).is_success
            except httpx.TransportError:
                return False

        wait_for(ready, 30, "Prometheus to start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    answer.raise_for_status()
    return list(answer.json()["data"]["result"])


def firing(prometheus: str, name: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_a_real_prometheus_fires_the_stalled_queue_alert_on_the_apis_metrics(
    lone_api: LoneApi, prometheus: str
) -> None:
    # Scraped, queue empty and no row finished: nothing to say yet.
    wait_for(
        lambda: query(
            prometheus, 'count_over_time(reviewscore_queue_depth{queue="bulk"}[1m]) >= 2'
        ),
        60,
        "two scrapes of the API",
    )
    assert firing(prometheus, "ReviewscoreBulkQueueStalled") == []
    # Every metric the rules name is one the API exports.
    exported = {r["metric"]["__name__"] for r in query(prometheus, '{__name__=~"reviewscore_.+"}')}
    named = set(re.findall(r"\breviewscore_[a-z_]+\b", (PROM_DIR / "alerts.yml").read_text()))
    assert named <= exported, named - exported

    # A job of 250 reviews: three chunks queued, and no worker to take them.
    csv = "id,text\n" + "".join(f"r{i},a fine film number {i}\n" for i in range(250))
    job = httpx.post(f"{lone_api.url}/v1/jobs", files={"file": ("reviews.csv", csv)}, timeout=30)
    assert job.status_code == 202, job.text

    (alert,) = wait_for(
        lambda: firing(prometheus, "ReviewscoreBulkQueueStalled"),
        60,
        "ReviewscoreBulkQueueStalled to fire",
    )
    assert alert["labels"]["queue"] == "bulk"
    assert alert["labels"]["severity"] == "critical"
    assert "no row was scored" in alert["annotations"]["summary"]
    # And it has no worker at all.
    assert wait_for(lambda: firing(prometheus, "ReviewscoreNoWorkers"), 60, "ReviewscoreNoWorkers")
    depth = query(prometheus, 'reviewscore_queue_depth{queue="bulk"}')
    assert [r["value"][1] for r in depth] == ["3"]
