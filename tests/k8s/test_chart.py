"""The Helm chart, rendered with the project's pinned helm: lint, what it creates, schemas, k8s/ in sync.

Schema validation: the Kubernetes JSON schemas of 1.31 to 1.37 bundled in the
pinned kubernetes-validate (offline), the WorkerPool objects against the CRD's
own openAPIV3Schema, and a server-side dry run against the local v1.37.2 API
server (admission, defaulting and the CRD's CEL rules included).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kv

from renderfarm.core.pool_catalog import pool_catalog
from tests.k8s.operator_fixtures import workerpool_crd  # noqa: F401  (fixture)
from tests.support.chart import CHART, CRD_FILE, REPO_ROOT, by_kind, documents, helm_template, plain_manifests, render_docs
from tests.support.procs import wait_for

K8S_VERSIONS = [f"1.{minor}.0" for minor in range(31, 38)]
MONITORING_APIS = ["monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PodMonitor",
                   "monitoring.coreos.com/v1/PrometheusRule"]
# Everything optional switched on (the default render covers bundled Redis and one namespace).
FULL_SETS = ["api.ingress.enabled=true", "api.ingress.tlsSecretName=rf-tls", "api.autoscaling.enabled=true",
             "redis.enabled=false", "redis.external.url=rediss://redis.example:6380/0",
             "redis.external.existingSecret=ext-redis", "media.persistence.existingClaim=shared-media",
             "apiKeys.hashes[0]=" + "ab" * 32, "webhooks.existingSecret=rf-webhooks",
             "operator.watchNamespaces={renderfarm,render-b}",
             "monitoring.serviceMonitor.enabled=true", "monitoring.podMonitor.enabled=true",
             "monitoring.prometheusRule.enabled=true", "monitoring.dashboards.enabled=true",
             "storage.backend=s3", "storage.s3.endpoint=http://seaweedfs:8333", "storage.s3.bucket=media",
             "storage.s3.existingSecret=rf-s3", "storage.s3.allowedInputBuckets={raw,archive}"]
API_VERSION_ARGS = [arg for api in MONITORING_APIS for arg in ("--api-versions", api)]


def _sets(sets: list[str]) -> list[str]:
    return [arg for item in sets for arg in ("--set", item)]


FULL = _sets(FULL_SETS) + API_VERSION_ARGS
VARIANTS = {"default": [], "full": FULL}
# Everything optional switched off.
MINIMAL = _sets(["operator.enabled=false", "beat.enabled=false", "networkPolicy.enabled=false",
                 "media.persistence.enabled=false", "redis.persistence.enabled=false", "fullnameOverride=farm",
                 "api.podDisruptionBudget.enabled=false", "workers.defaults.podDisruptionBudget.enabled=false",
                 "redis.auth.existingSecret=mine"])


@pytest.fixture(scope="module")
def helm(k8s_tools: Path) -> Path:
    return k8s_tools / "helm"


@pytest.fixture(scope="module")
def default_docs(helm) -> list[dict]:
    return render_docs(helm)


def _pod_specs(docs: list[dict]):
    for doc in docs:
        if doc["kind"] == "Pod":
            yield doc["metadata"]["name"], doc["spec"]
        elif doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


# -- lint ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "full", "minimal"])
def test_helm_lint_strict_passes(helm, variant):
    args = [arg for arg in {**VARIANTS, "minimal": MINIMAL}[variant] if arg not in API_VERSION_ARGS]  # no --api-versions in lint
    proc = subprocess.run([str(helm), "lint", "--strict", str(CHART), *args],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_values_schema_refuses_an_unknown_value(helm):
    with pytest.raises(RuntimeError, match="additional properties|additionalProperties|not allowed"):
        helm_template(helm, "--set", "workers.defaults.replica=3")


def test_unknown_pool_override_fails_with_the_known_pools(helm):
    with pytest.raises(RuntimeError, match="workers.pools.gpu-audio: unknown pool; the pools are cpu, gpu-transcribe, gpu-vision"):
        helm_template(helm, "--set", "workers.pools.gpu-audio.maxReplicas=2")


# -- what it creates ----------------------------------------------------------------


def test_one_worker_deployment_and_workerpool_per_registry_pool(default_docs):
    deployments, pools = by_kind(default_docs, "Deployment"), by_kind(default_docs, "WorkerPool")
    catalog = pool_catalog()
    assert sorted(pools) == sorted(pool["name"] for pool in catalog)
    for pool in catalog:
        wp = pools[pool["name"]]["spec"]
        assert [queue["name"] for queue in wp["queues"]] == pool["queues"]
        deployment = deployments[wp["deployment"]]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", "renderfarm.worker"]
        assert f"--pool={pool['name']}" in container["args"]
        assert deployment["spec"]["replicas"] == wp["minReplicas"]
        assert deployment["metadata"]["annotations"]["renderfarm.io/kinds"] == ",".join(pool["kinds"])


def test_gpu_pools_request_gpus_on_gpu_nodes_from_values(helm):
    docs = render_docs(helm, "--set", "workers.gpu.nodeSelector.gpu-type=l4", "--set", "workers.gpu.gpusPerPod=2",
                       "--set", "workers.pools.gpu-vision.tolerations[0].key=dedicated",
                       "--set", "workers.pools.gpu-vision.tolerations[0].operator=Exists")
    deployments = by_kind(docs, "Deployment")
    cpu = deployments["renderfarm-worker-cpu"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in json.dumps(cpu) and "nodeSelector" not in cpu
    assert cpu["containers"][0]["image"].startswith("ghcr.io/renderfarm/renderfarm-worker:")
    for name in ("gpu-transcribe", "gpu-vision"):
        spec = deployments[f"renderfarm-worker-{name}"]["spec"]["template"]["spec"]
        resources = spec["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == 2 and resources["requests"]["nvidia.com/gpu"] == 2
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true", "gpu-type": "l4"}
        assert spec["containers"][0]["image"].startswith("ghcr.io/renderfarm/renderfarm-worker-gpu:")
        assert "--concurrency=1" in spec["containers"][0]["args"]
    assert deployments["renderfarm-worker-gpu-vision"]["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "dedicated", "operator": "Exists"}]
    assert deployments["renderfarm-worker-gpu-transcribe"]["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_worker_grace_period_comes_from_values_and_exceeds_a_typical_job(helm, default_docs):
    for name, spec in _pod_specs(default_docs):
        if "-worker-" in name:
            assert spec["terminationGracePeriodSeconds"] >= 600, name
    docs = render_docs(helm, "--set", "workers.pools.cpu.terminationGracePeriodSeconds=1800")
    grace = {name: spec["terminationGracePeriodSeconds"] for name, spec in _pod_specs(docs) if "-worker-" in name}
    assert grace["renderfarm-worker-cpu"] == 1800 and grace["renderfarm-worker-gpu-vision"] == 900



def test_worker_recycling_limits_come_from_values_per_pool_and_default_to_the_pools_own(helm, default_docs):
    def recycling_env(docs):
        out = {}
        for name, spec in _pod_specs(docs):
            if "-worker-" in name:
                env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
                out[name] = {k: v for k, v in env.items() if k.startswith("RF_MAX_")}
        return out

    assert all(env == {} for env in recycling_env(default_docs).values())  # unset: renderfarm.core.recycling decides
    docs = render_docs(helm, "--set", "workers.pools.cpu.maxTasksPerChild=2", "--set", "workers.gpu.maxMemoryPerChildMB=0",
                       "--set", "workers.pools.gpu-vision.maxGpuMemoryGrowthMB=512")
    env = recycling_env(docs)
    assert env["renderfarm-worker-cpu"] == {"RF_MAX_TASKS_PER_CHILD": "2"}
    assert env["renderfarm-worker-gpu-transcribe"] == {"RF_MAX_MEMORY_PER_CHILD_MB": "0"}
    assert env["renderfarm-worker-gpu-vision"] == {"RF_MAX_MEMORY_PER_CHILD_MB": "0", "RF_MAX_GPU_MEMORY_GROWTH_MB": "512"}

def test_images_and_pull_policy_from_values(helm):
    docs = render_docs(helm, "--set", "images.api.repository=localhost/rf-api", "--set", "images.api.tag=abc123",
                       "--set", "images.worker.repository=localhost/rf-worker", "--set", "images.worker.tag=def456",
                       "--set", "redis.image.repository=localhost/rf-redis", "--set", "redis.image.tag=r1",
                       "--set", "images.pullPolicy=Never", "--set", "images.pullSecrets={mirror}")
    images = {}
    for name, spec in _pod_specs(docs):
        assert spec["imagePullSecrets"] == [{"name": "mirror"}], name
        for container in spec.get("initContainers", []) + spec["containers"]:
            images[f"{name}/{container['name']}"] = container["image"]
            assert container["imagePullPolicy"] == "Never"
    assert images["renderfarm-api/api"] == "localhost/rf-api:abc123"
    assert images["renderfarm-operator/operator"] == "localhost/rf-api:abc123"  # the operator runs from the API image
    assert images["renderfarm-beat/beat"] == "localhost/rf-worker:def456"
    assert images["renderfarm-worker-cpu/worker"] == "localhost/rf-worker:def456"
    assert images["renderfarm-redis/redis"] == "localhost/rf-redis:r1"
    assert images["renderfarm-test-probe/make-clip"] == "localhost/rf-worker:def456"


def test_every_pod_runs_hardened(default_docs):
    specs = dict(_pod_specs(default_docs))
    assert {"renderfarm-api", "renderfarm-operator", "renderfarm-beat", "renderfarm-redis",
            "renderfarm-worker-cpu", "renderfarm-test-probe"} <= set(specs)
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        mounts_tmp = False
        for container in spec.get("initContainers", []) + spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]}
            assert "resources" in container, (name, container["name"])
            mounts_tmp = mounts_tmp or any(m["mountPath"] == "/tmp" for m in container.get("volumeMounts", []))
        assert mounts_tmp, f"{name}: no writable /tmp on a read-only root"
        token = spec.get("automountServiceAccountToken", True)
        assert token is (name in ("renderfarm-api", "renderfarm-operator")), name


def test_beat_is_a_singleton_and_the_operator_probes_its_health(default_docs):
    deployments = by_kind(default_docs, "Deployment")
    beat = deployments["renderfarm-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"] == {"type": "Recreate"}
    assert beat["template"]["spec"]["containers"][0]["command"] == ["python", "-m", "renderfarm.worker.beat"]
    operator = deployments["renderfarm-operator"]["spec"]["template"]["spec"]["containers"][0]
    assert operator["command"][:3] == ["python", "-m", "renderfarm.operator"]
    assert operator["readinessProbe"]["httpGet"]["path"] == "/healthz"
    env = {item["name"]: item for item in operator["env"]}
    assert env["RF_OPERATOR_LEASE_NAME"]["value"] == "renderfarm-operator"


def test_bundled_redis_keeps_an_aof_fsynced_always_with_a_secret_password(default_docs):
    redis = by_kind(default_docs, "StatefulSet")["renderfarm-redis"]["spec"]
    container = redis["template"]["spec"]["containers"][0]
    script = container["args"][0]
    assert "--appendonly yes" in script and "--appendfsync always" in script
    assert "requirepass" in script and "$REDIS_PASSWORD" in script  # from the env, never the command line
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "renderfarm-redis-auth", "key": "password"}
    assert redis["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    api = by_kind(default_docs, "Deployment")["renderfarm-api"]["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in api["env"]}
    assert env["RF_REDIS_URL"]["value"] == "redis://renderfarm-redis:6379/0"
    assert env["RF_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "renderfarm-redis-auth"


def test_external_redis_is_a_url_and_an_existing_secret(helm):
    docs = render_docs(helm, *FULL)
    assert not by_kind(docs, "StatefulSet") and "renderfarm-redis-auth" not in by_kind(docs, "Secret")
    for name, spec in _pod_specs(docs):
        env = {item["name"]: item for item in spec["containers"][0].get("env", [])}
        if "RF_REDIS_URL" in env:
            assert env["RF_REDIS_URL"]["value"] == "rediss://redis.example:6380/0", name
            assert env["RF_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "ext-redis", name


def test_s3_storage_is_settings_and_an_existing_secret(helm, default_docs):
    farm_pods = 0
    for name, spec in _pod_specs(render_docs(helm, *FULL)):
        env = {item["name"]: item for item in spec["containers"][0].get("env", [])}
        if "RF_REDIS_URL" not in env:
            continue
        farm_pods += 1
        assert env["RF_STORAGE_BACKEND"]["value"] == "s3", name
        assert (env["RF_S3_ENDPOINT"]["value"], env["RF_S3_BUCKET"]["value"]) == ("http://seaweedfs:8333", "media"), name
        assert env["RF_S3_ALLOWED_INPUT_BUCKETS"]["value"] == "raw,archive", name
        for var, key in (("RF_S3_ACCESS_KEY_ID", "access-key-id"), ("RF_S3_SECRET_ACCESS_KEY", "secret-access-key")):
            assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "rf-s3", "key": key}, name
    assert farm_pods >= 4  # API, beat, and a worker per pool
    for name, spec in _pod_specs(default_docs):  # the default stays on the shared volume
        assert not [e for e in spec["containers"][0].get("env", []) if e["name"].startswith(("RF_S3_", "RF_STORAGE"))]


def test_media_is_one_shared_read_write_many_claim(default_docs):
    claim = by_kind(default_docs, "PersistentVolumeClaim")["renderfarm-media"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name, spec in _pod_specs(default_docs):
        if name == "renderfarm-api" or "-worker-" in name:
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert volumes["media"]["persistentVolumeClaim"]["claimName"] == "renderfarm-media", name
            env = {item["name"]: item.get("value") for item in spec["containers"][0]["env"]}
            assert env["RF_DATA_DIR"] == "/data" and env["RF_ALLOWED_INPUT_ROOTS"] == "/data/inputs", name


def test_api_keys_come_from_a_secret_of_digests(helm, default_docs):
    api = by_kind(default_docs, "Deployment")["renderfarm-api"]["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in api["env"]}
    assert env["RF_API_KEY_HASHES"]["valueFrom"]["secretKeyRef"] == {"name": "renderfarm-api-keys", "key": "api-key-hashes"}
    assert "RF_API_KEYS" not in env
    digest = "ab" * 32
    secret = by_kind(render_docs(helm, "--set", f"apiKeys.hashes[0]={digest}"), "Secret")["renderfarm-api-keys"]
    assert secret["stringData"]["api-key-hashes"] == digest


def test_the_api_may_touch_only_workerpools(default_docs):
    role = by_kind(default_docs, "Role")["renderfarm-api"]
    assert role["rules"] == [{"apiGroups": ["renderfarm.io"], "resources": ["workerpools"],
                              "verbs": ["get", "list", "patch"]}]
    api = by_kind(default_docs, "Deployment")["renderfarm-api"]["spec"]["template"]["spec"]
    assert api["serviceAccountName"] == "renderfarm-api"


def test_operator_gets_a_role_for_one_namespace_and_a_clusterrole_bound_per_namespace_for_several(helm, default_docs):
    assert "renderfarm-operator" in by_kind(default_docs, "Role") and not by_kind(default_docs, "ClusterRole")
    docs = render_docs(helm, "--set", "operator.watchNamespaces={media-a,media-b}")
    cluster_role = by_kind(docs, "ClusterRole")["renderfarm-operator"]
    assert not any(rule["apiGroups"] == ["coordination.k8s.io"] for rule in cluster_role["rules"])
    bindings = [doc for doc in docs if doc["kind"] == "RoleBinding" and doc["metadata"]["name"] == "renderfarm-operator"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["media-a", "media-b"]
    assert not by_kind(docs, "ClusterRoleBinding")  # bound only where it works
    lease = by_kind(docs, "Role")["renderfarm-operator-lease"]
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["renderfarm-operator"],
            "verbs": ["get", "update"]} in lease["rules"]
    args = by_kind(docs, "Deployment")["renderfarm-operator"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["--namespace=media-a", "--namespace=media-b"]


def test_network_policies_let_only_farm_pods_reach_redis(default_docs):
    policies = by_kind(default_docs, "NetworkPolicy")
    redis = policies["renderfarm-redis"]["spec"]
    allowed = redis["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed == {"app.kubernetes.io/instance": "renderfarm", "renderfarm.io/redis-client": "true"}
    clients = {name for name, spec in _pod_specs(default_docs)}
    labelled = set()
    for doc in default_docs:
        labels = (doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels")
                  if doc["kind"] != "Pod" else doc["metadata"]["labels"]) or {}
        if labels.get("renderfarm.io/redis-client") == "true":
            labelled.add(doc["metadata"]["name"])
    assert labelled == clients - {"renderfarm-redis"}
    assert [port["port"] for port in policies["renderfarm-api"]["spec"]["ingress"][0]["ports"]] == ["http"]
    internal = policies["renderfarm-internal"]["spec"]["ingress"][0]["ports"]
    assert {port["port"] for port in internal} == {"metrics", "health"}


def test_disruption_budgets_cover_the_api_and_each_pool(default_docs):
    budgets = by_kind(default_docs, "PodDisruptionBudget")
    assert sorted(budgets) == sorted(["renderfarm-api"] + [f"renderfarm-worker-{p['name']}" for p in pool_catalog()])


def test_monitoring_is_off_by_default_and_needs_the_api_in_the_cluster(helm, default_docs):
    kinds = {doc["kind"] for doc in default_docs}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    sets = _sets([item for item in FULL_SETS if item.startswith("monitoring.")])
    without_api = render_docs(helm, *sets)
    assert not {doc["kind"] for doc in without_api} & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    with_api = render_docs(helm, *sets, *API_VERSION_ARGS)
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule"} <= {doc["kind"] for doc in with_api}
    dashboards = [doc for doc in with_api if doc["kind"] == "ConfigMap" and "grafana_dashboard" in doc["metadata"]["labels"]]
    assert dashboards and all(json.loads(next(iter(d["data"].values())))["panels"] for d in dashboards)


def test_helm_test_makes_its_own_clip_and_waits_for_a_probe_job(default_docs):
    pod = by_kind(default_docs, "Pod")["renderfarm-test-probe"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    make_clip = pod["spec"]["initContainers"][0]["args"][0]
    assert "-f lavfi" in make_clip and "dir=/data/inputs/helm-test" in make_clip and '"$dir/clip.mp4"' in make_clip
    probe = pod["spec"]["containers"][0]["args"][0]
    assert "clip=/data/inputs/helm-test/clip.mp4" in probe
    assert 'renderfarm submit probe "$clip"' in probe and "--wait" in probe and "apikey create" in probe


# -- schemas ------------------------------------------------------------------------


def _workerpool_schema() -> dict:
    crd = yaml.safe_load(CRD_FILE.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_manifests_validate_against_kubernetes_1_31_to_1_37(helm, variant):
    assert kv.latest_version() >= "1.37"  # the pinned package bundles every version named here
    docs = render_docs(helm, *VARIANTS[variant])
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # kube-prometheus-stack's CRDs are not bundled; the server dry run cannot see them either
        if doc["kind"] == "WorkerPool":
            jsonschema.Draft4Validator(_workerpool_schema()).validate(doc)  # OpenAPI v3 schemas are draft-4 style
            checked += 1
            continue
        for version in K8S_VERSIONS:
            kv.validate(doc, version, strict=True)  # raises ValidationError with the path
            checked += 1
    assert checked >= 20 * len(K8S_VERSIONS)


def test_a_schema_error_is_caught(helm, default_docs):
    # The check above can fail: a misplaced field is refused by the strict schemas.
    broken = json.loads(json.dumps(by_kind(default_docs, "Deployment")["renderfarm-api"]))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, "1.37.0", strict=True)


def test_rendered_manifests_pass_a_server_side_dry_run_on_1_37(helm, local_cluster, workerpool_crd, namespace):
    version = local_cluster.kubectl_json("version")["serverVersion"]["gitVersion"]
    assert version.startswith("v1.37.")
    variants = {"default": [], "full": _sets([item for item in FULL_SETS if "watchNamespaces" not in item])}
    for variant, args in variants.items():  # (the full render's other namespaces do not exist here)
        docs = [doc for doc in render_docs(helm, *args, namespace=namespace)
                if not doc["apiVersion"].startswith("monitoring.coreos.com/")]
        proc = local_cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
                                     input=yaml.safe_dump_all(docs))
        assert proc.returncode == 0, f"{variant}: {proc.stderr}"
        assert proc.stdout.count("(server dry run)") == len(docs), proc.stdout


# -- plain manifests ----------------------------------------------------------------


def test_plain_manifests_in_k8s_match_the_chart(helm):
    plain = REPO_ROOT / "k8s" / "renderfarm.yaml"
    assert plain.read_text() == plain_manifests(helm), "k8s/ differs from the chart: run `make manifests`"
    docs = documents(plain.read_text())
    assert "Secret" in {doc["kind"] for doc in docs} and "renderfarm-redis-auth" not in by_kind(docs, "Secret")
    assert "Pod" not in {doc["kind"] for doc in docs}  # no helm test


def test_switching_parts_off_leaves_no_trace_of_them(helm):
    docs = render_docs(helm, *MINIMAL)
    names = {f"{doc['kind']}/{doc['metadata']['name']}" for doc in docs}
    assert not [name for name in names if "operator" in name or "beat" in name]
    assert not {doc["kind"] for doc in docs} & {"NetworkPolicy", "PodDisruptionBudget", "PersistentVolumeClaim"}
    assert "Secret/farm-redis-auth" not in names
    redis = by_kind(docs, "StatefulSet")["farm-redis"]["spec"]
    assert "volumeClaimTemplates" not in redis
    assert redis["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "mine"
    for name, spec in _pod_specs(docs):
        for volume in spec.get("volumes", []):
            assert "persistentVolumeClaim" not in volume, name


def test_zero_and_false_overrides_win(helm, default_docs):
    # GPU pools start at minReplicas 0 over the defaults' 1; a pool can be switched off.
    pools = by_kind(default_docs, "WorkerPool")
    assert pools["cpu"]["spec"]["minReplicas"] == 1 and pools["gpu-vision"]["spec"]["minReplicas"] == 0
    docs = render_docs(helm, "--set", "workers.pools.gpu-vision.enabled=false",
                       "--set", "workers.pools.cpu.scaleDown.stabilizationWindowSeconds=0")
    assert "gpu-vision" not in by_kind(docs, "WorkerPool")
    assert "renderfarm-worker-gpu-vision" not in by_kind(docs, "Deployment")
    cpu = by_kind(docs, "WorkerPool")["cpu"]["spec"]
    assert cpu["scaleDown"] == {"stabilizationWindowSeconds": 0, "maxStep": 1}


def test_workers_are_ready_when_consuming_and_the_test_pod_is_placed_like_the_api(helm, default_docs):
    for name, spec in _pod_specs(default_docs):
        if "-worker-" in name:
            container = spec["containers"][0]
            assert container["readinessProbe"]["tcpSocket"]["port"] == "metrics", name
            assert "livenessProbe" not in container, name  # a long job is not a hang
    docs = render_docs(helm, "--set", "api.nodeSelector.node-role=real")
    assert by_kind(docs, "Pod")["renderfarm-test-probe"]["spec"]["nodeSelector"] == {"node-role": "real"}


def test_operator_rbac_for_several_namespaces_reaches_only_those(helm, local_cluster, workerpool_crd, namespace):
    served = [f"{namespace}-a", f"{namespace}-b"]
    for name in served + [f"{namespace}-other"]:
        local_cluster.kubectl("create", "namespace", name, check=True)
    try:
        rendered = helm_template(helm, "--show-only", "templates/operator-rbac.yaml",
                                 "--set", f"operator.watchNamespaces={{{','.join(served)}}}",
                                 release=f"rbac-{namespace}"[:40], namespace=namespace)
        docs = documents(rendered)
        for doc in docs:  # as helm install does: the release namespace where a template names none
            if doc["kind"] != "ClusterRole":
                doc["metadata"].setdefault("namespace", namespace)
        local_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), check=True)
        account = f"system:serviceaccount:{namespace}:{f'rbac-{namespace}'[:40]}-renderfarm-operator"

        def can(verb: str, resource: str, where: str, *extra: str) -> bool:
            proc = local_cluster.kubectl("auth", "can-i", verb, resource, *extra, "-n", where, f"--as={account}")
            assert proc.stdout.strip() in ("yes", "no"), proc.stderr
            return proc.stdout.strip() == "yes"

        # the authorizer sees new bindings after its informer catches up
        wait_for(lambda: can("watch", "workerpools.renderfarm.io", served[0]), 15, "RBAC to take effect")
        for where in served:
            assert can("watch", "workerpools.renderfarm.io", where) and can("patch", "deployments", where, "--subresource=scale")
            assert not can("patch", "deployments", where) and not can("get", "secrets", where)
        assert not can("list", "workerpools.renderfarm.io", f"{namespace}-other")
        assert not can("list", "workerpools.renderfarm.io", namespace)  # not served: no access either
        assert can("create", "leases.coordination.k8s.io", namespace)  # the Lease lives in the release namespace
        assert not can("create", "leases.coordination.k8s.io", served[0])
    finally:
        for name in served + [f"{namespace}-other"]:
            local_cluster.kubectl("delete", "namespace", name, "--wait=false")
        local_cluster.kubectl("delete", "clusterrole", f"{f'rbac-{namespace}'[:40]}-renderfarm-operator",
                              "--ignore-not-found")
