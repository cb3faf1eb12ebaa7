"""Both charts: linted strictly by the Helm SDK, rendered for every scenario, every object valid
for Kubernetes 1.25 and 1.31, and the behaviour the values promise."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from bytefreezer.ingress.proxy.config import load_proxy_config
from tests.deploy.charts import BYTEFREEZER, HELM, PROXY, env_of, find, notes, render, scenario
from tests.helpers import promtool

SCENARIOS = sorted(p.name for p in (BYTEFREEZER / "ci").glob("*.yaml"))
PROXY_SCENARIOS = sorted(p.name for p in (PROXY / "ci").glob("*.yaml"))
CRDS = {"ServiceMonitor": "endpoints", "PrometheusRule": "groups"}  # kind: what its spec needs
ALERTS = BYTEFREEZER / "files" / "bytefreezer-alerts.yaml"


@pytest.mark.parametrize("chart", [BYTEFREEZER, PROXY], ids=["bytefreezer", "proxy"])
def test_lint_strict(chart: Path) -> None:
    report = helm_python.lint(str(chart), strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def _valid(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if obj["kind"] in CRDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            assert obj["spec"][CRDS[obj["kind"]]]
            continue
        for version in ("1.25.0", "1.31.0"):
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("name", ["defaults", *SCENARIOS])
def test_bytefreezer_renders_valid_objects(name: str) -> None:
    objects = render(BYTEFREEZER, {} if name == "defaults" else scenario(BYTEFREEZER, name))
    assert objects
    _valid(objects)
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == "bf", obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/component"), obj["metadata"]["name"]


@pytest.mark.parametrize("name", ["defaults", *PROXY_SCENARIOS])
def test_proxy_renders_valid_objects(name: str) -> None:
    objects = render(PROXY, {} if name == "defaults" else scenario(PROXY, name), release="edge")
    _valid(objects)
    assert all(o["metadata"]["labels"]["app.kubernetes.io/component"] == "proxy" for o in objects)


SECRET_VALUES = (
    "AKIAEXAMPLEEXAMPLE",
    "example-secret-key",
    "managedcontrolkeyexample",
    "minioadmin",
)


@pytest.mark.parametrize("name", SCENARIOS)
def test_secrets_only_in_secrets(name: str) -> None:
    for obj in render(BYTEFREEZER, scenario(BYTEFREEZER, name)):
        if obj["kind"] == "Secret":
            continue
        text = json.dumps(obj)
        for secret in SECRET_VALUES:
            assert secret not in text, (
                f"{secret} leaked into {obj['kind']} {obj['metadata']['name']}"
            )
    proxy = render(PROXY, scenario(PROXY, "syslog-and-http.yaml"), release="edge")
    for obj in proxy:
        if obj["kind"] != "Secret":
            assert "bfk_0123456789ab" not in json.dumps(obj)


def test_defaults() -> None:
    objects = render(BYTEFREEZER)
    webhook = find(objects, "Service", "bf-receiver-webhook")
    assert webhook["spec"]["type"] == "LoadBalancer" and webhook["spec"]["ports"][0]["port"] == 8080
    for name, port in (("receiver", 8081), ("piper", 8082), ("packer", 8083)):
        deployment = find(objects, "Deployment", f"bf-bytefreezer-{name}")
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["args"] == [name]
        assert container["image"] == f"bytefreezer/{name}:0.1.0"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["livenessProbe"]["httpGet"]["path"] == "/api/v1/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/api/v1/ready"
        assert {"name": "api", "containerPort": port, "protocol": "TCP"} in container["ports"]
        env = env_of(deployment)
        assert env["BYTEFREEZER_INSTANCE_ID"] == {"field": "metadata.name"}
        assert env["BYTEFREEZER_CONTROL__URL"] == "http://bf-bytefreezer-control:8082"
        assert env["BYTEFREEZER_CONTROL__API_KEY"] == {
            "secret": "bf-bytefreezer-control",
            "key": "api-key",
        }
        assert env["BYTEFREEZER_STORAGE__S3__ENDPOINT"] == "minio:9000"
        assert env["BYTEFREEZER_MONITORING__MODE"] == "none"
        assert pod["terminationGracePeriodSeconds"] >= 30
        service = find(objects, "Service", f"bf-bytefreezer-{name}")
        assert [p["name"] for p in service["spec"]["ports"]] == ["api"]
    find(objects, "Deployment", "bf-bytefreezer-control")
    find(objects, "PersistentVolumeClaim", "bf-bytefreezer-control")
    control_key = find(objects, "Secret", "bf-bytefreezer-control")["stringData"]["api-key"]
    assert control_key.startswith("bfk_") and len(control_key.split("_")) == 3
    assert "bf-receiver-webhook" in notes(BYTEFREEZER)


def test_minio_bundled() -> None:
    objects = render(BYTEFREEZER, scenario(BYTEFREEZER, "minio.yaml"))
    service = find(objects, "Service", "minio")
    assert service["spec"]["ports"][0]["port"] == 9000
    minio = find(objects, "Deployment", "bf-bytefreezer-minio")
    probe = minio["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/minio/health/ready"
    find(objects, "PersistentVolumeClaim", "bf-bytefreezer-minio")
    job = find(objects, "Job", "bf-bytefreezer-create-buckets")
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert all(f"bf/{bucket}" in script for bucket in ("intake", "piper", "geoip"))
    env = env_of(find(objects, "Deployment", "bf-bytefreezer-receiver"))
    assert env["BYTEFREEZER_STORAGE__S3__ACCESS_KEY"] == {
        "secret": "bf-bytefreezer-s3",
        "key": "access-key",
    }
    assert find(objects, "Secret", "bf-bytefreezer-s3")["stringData"]["access-key"] == "minioadmin"


def test_s3_credentials_modes() -> None:
    keys = render(BYTEFREEZER, scenario(BYTEFREEZER, "external-s3-keys.yaml"))
    env = env_of(find(keys, "Deployment", "bf-bytefreezer-piper"))
    assert env["BYTEFREEZER_STORAGE__S3__SECRET_KEY"] == {
        "secret": "bf-bytefreezer-s3",
        "key": "secret-key",
    }
    assert (
        env["BYTEFREEZER_BUCKETS__INTAKE"] == "acme-intake"
        and env["BYTEFREEZER_STORAGE__S3__USE_SSL"] == "true"
    )
    role = render(BYTEFREEZER, scenario(BYTEFREEZER, "iam-role.yaml"))
    env = env_of(find(role, "Deployment", "bf-bytefreezer-piper"))
    assert (
        "BYTEFREEZER_STORAGE__S3__ACCESS_KEY" not in env
        and env["BYTEFREEZER_STORAGE__S3__USE_IAM_ROLE"] == "true"
    )
    assert not [o for o in role if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-s3")]
    for component in ("receiver", "piper", "packer", "control"):
        env = env_of(find(role, "Deployment", f"bf-bytefreezer-{component}"))
        assert env["BYTEFREEZER_STORAGE__S3__SERVER_SIDE_ENCRYPTION"] == "aws:kms"
        assert env["BYTEFREEZER_STORAGE__S3__KMS_KEY_ID"] == "alias/bytefreezer"
    plain = env_of(find(keys, "Deployment", "bf-bytefreezer-packer"))
    assert not {k for k in plain if "ENCRYPTION" in k or "KMS" in k}
    existing = render(BYTEFREEZER, scenario(BYTEFREEZER, "existing-secrets.yaml"))
    env = env_of(find(existing, "Deployment", "bf-bytefreezer-packer"))
    assert env["BYTEFREEZER_STORAGE__S3__ACCESS_KEY"] == {
        "secret": "bytefreezer-s3-credentials",
        "key": "access-key",
    }
    assert env["BYTEFREEZER_CONTROL__API_KEY"] == {
        "secret": "bytefreezer-control-key",
        "key": "api-key",
    }
    assert not [o for o in existing if o["kind"] == "Secret"]


def test_control_modes() -> None:
    managed = render(BYTEFREEZER, scenario(BYTEFREEZER, "managed-control.yaml"))
    assert not [
        o
        for o in managed
        if o["metadata"]["name"] == "bf-bytefreezer-control" and o["kind"] == "Deployment"
    ]
    env = env_of(find(managed, "Deployment", "bf-bytefreezer-receiver"))
    assert env["BYTEFREEZER_CONTROL__URL"] == "https://control.bytefreezer.example"
    secret = find(managed, "Secret", "bf-bytefreezer-control")
    assert secret["stringData"]["api-key"] == "bfk_0123456789ab_managedcontrolkeyexample"
    on_prem = render(BYTEFREEZER, scenario(BYTEFREEZER, "on-prem-control.yaml"))
    control = find(on_prem, "Deployment", "bf-bytefreezer-control")
    volumes = control["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "emptyDir": {}} in volumes
    assert env_of(control)["BYTEFREEZER_CONTROL__ADMIN_KEY"] == {
        "secret": "bf-bytefreezer-control",
        "key": "api-key",
    }


def test_the_bundled_prometheus_loads_the_alerting_rules(tmp_path: Path) -> None:
    """Its configuration is the scrape jobs plus the rules file, which Prometheus's own
    `promtool check config` accepts; without alerts it reads the scrape jobs alone."""
    objects = render(BYTEFREEZER, scenario(BYTEFREEZER, "monitoring-prometheus.yaml"))
    data = find(objects, "ConfigMap", "bf-bytefreezer-scrape-config")["data"]
    assert yaml.safe_load(data["alerts.yml"]) == yaml.safe_load(ALERTS.read_text())
    config = yaml.safe_load(data["prometheus.yml"])
    assert config["rule_files"] == ["/etc/scrape/alerts.yml"]
    assert config["scrape_configs"] == yaml.safe_load(data["scrape.yml"])["scrape_configs"]
    container = find(objects, "Deployment", "bf-prometheus")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "--config.file=/etc/scrape/prometheus.yml" in container["args"]
    assert {"name": "scrape", "mountPath": "/etc/scrape"} in container["volumeMounts"]
    # Debian's Prometheus is built without Kubernetes discovery: it checks the configuration
    # with the discovery swapped for a static target, and the rules file as rendered.
    (tmp_path / "alerts.yml").write_text(data["alerts.yml"])
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    for job in config["scrape_configs"]:
        job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9091"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    count = sum(len(group["rules"]) for group in yaml.safe_load(ALERTS.read_text())["groups"])
    assert count == 9 and f"{count} rules found" in checked.stdout + checked.stderr

    values = scenario(BYTEFREEZER, "monitoring-prometheus.yaml")
    values["monitoring"]["alerts"] = {"enabled": False}
    quiet = render(BYTEFREEZER, values)
    assert set(find(quiet, "ConfigMap", "bf-bytefreezer-scrape-config")["data"]) == {"scrape.yml"}
    args = find(quiet, "Deployment", "bf-prometheus")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--config.file=/etc/scrape/scrape.yml" in args


def test_monitoring_options() -> None:
    objects = render(BYTEFREEZER, scenario(BYTEFREEZER, "monitoring-prometheus.yaml"))
    for name, port in (("receiver", 9091), ("piper", 9092), ("packer", 9093)):
        service = find(objects, "Service", f"bf-bytefreezer-{name}")
        assert {
            "name": "metrics",
            "port": port,
            "targetPort": "metrics",
            "protocol": "TCP",
        } in service["spec"]["ports"]
        assert service["metadata"]["labels"]["app.kubernetes.io/component"] == name
        assert (
            env_of(find(objects, "Deployment", f"bf-bytefreezer-{name}"))[
                "BYTEFREEZER_MONITORING__MODE"
            ]
            == "prometheus"
        )
    prometheus = find(objects, "Service", "bf-prometheus")
    assert prometheus["spec"]["ports"][0]["port"] == 9090
    scrape = yaml.safe_load(
        find(objects, "ConfigMap", "bf-bytefreezer-scrape-config")["data"]["scrape.yml"]
    )
    relabel = scrape["scrape_configs"][0]["relabel_configs"]
    assert {
        "source_labels": ["__meta_kubernetes_endpoint_port_name"],
        "regex": "metrics",
        "action": "keep",
    } in relabel
    args = find(objects, "Deployment", "bf-prometheus")["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    assert "--storage.tsdb.retention.time=15d" in args
    find(objects, "PersistentVolumeClaim", "bf-bytefreezer-prometheus")
    vm = render(BYTEFREEZER, scenario(BYTEFREEZER, "monitoring-victoriametrics.yaml"))
    vm_args = find(vm, "Deployment", "bf-victoriametrics")["spec"]["template"]["spec"]
    assert "-promscrape.config=/etc/scrape/scrape.yml" in vm_args["containers"][0]["args"]
    assert find(vm, "Service", "bf-victoriametrics")["spec"]["ports"][0]["port"] == 8428
    monitors = render(BYTEFREEZER, scenario(BYTEFREEZER, "monitoring-servicemonitor.yaml"))
    sm = find(monitors, "ServiceMonitor", "bf-bytefreezer-piper")
    assert (
        sm["metadata"]["namespace"] == "monitoring"
        and sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    )
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    rule = find(monitors, "PrometheusRule", "bf-bytefreezer-alerts")
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    assert not [o for o in objects if o["kind"] == "PrometheusRule"]  # only when asked for
    for mode, endpoint in (
        ("otlp-http", "http://otel-collector.observability:4318"),
        ("otlp-grpc", "otel-collector.observability:4317"),
    ):
        pushed = render(BYTEFREEZER, scenario(BYTEFREEZER, f"monitoring-{mode}.yaml"))
        env = env_of(find(pushed, "Deployment", "bf-bytefreezer-packer"))
        assert env["BYTEFREEZER_MONITORING__MODE"] == mode.replace("-", "_")
        assert env["BYTEFREEZER_MONITORING__EXTERNAL_ENDPOINT"] == endpoint
        assert "metrics" not in [
            p["name"] for p in find(pushed, "Service", "bf-bytefreezer-packer")["spec"]["ports"]
        ]


def test_scaled_and_combined() -> None:
    scaled = render(BYTEFREEZER, scenario(BYTEFREEZER, "scaled.yaml"))
    assert find(scaled, "Deployment", "bf-bytefreezer-piper")["spec"]["replicas"] == 4
    piper_env = env_of(find(scaled, "Deployment", "bf-bytefreezer-piper"))
    assert piper_env["BYTEFREEZER_PIPER__DEAD_LETTER_RETENTION_DAYS"] == "7"
    defaults = env_of(find(render(BYTEFREEZER), "Deployment", "bf-bytefreezer-piper"))
    assert defaults["BYTEFREEZER_PIPER__DEAD_LETTER_RETENTION_DAYS"] == "0"
    assert piper_env["BYTEFREEZER_PIPER__RETRY_BACKOFF_SECONDS"] == "5"
    assert piper_env["BYTEFREEZER_PIPER__RETRY_BACKOFF_MAX_SECONDS"] == "60"
    assert defaults["BYTEFREEZER_PIPER__RETRY_BACKOFF_MAX_SECONDS"] == "120"
    assert (
        env_of(find(scaled, "Deployment", "bf-bytefreezer-piper"))[
            "BYTEFREEZER_PIPER__MAX_CONCURRENT_JOBS"
        ]
        == "4"
    )
    assert (
        env_of(find(scaled, "Deployment", "bf-bytefreezer-packer"))[
            "BYTEFREEZER_PACKER__MAX_FILE_SIZE_MB"
        ]
        == "256"
    )
    packer_env = env_of(find(scaled, "Deployment", "bf-bytefreezer-packer"))
    assert packer_env["BYTEFREEZER_PACKER__MAX_CONCURRENT_JOBS"] == "3"
    assert packer_env["BYTEFREEZER_PACKER__LEDGER_RETENTION_SECONDS"] == "7200"  # extraEnv
    assert packer_env["BYTEFREEZER_PACKER__BUFFER_SECONDS"] == "300"
    assert packer_env["BYTEFREEZER_PACKER__BUFFER_MB"] == "128"
    assert packer_env["BYTEFREEZER_PACKER__RETRY_BACKOFF_SECONDS"] == "30"
    assert packer_env["BYTEFREEZER_PACKER__RETRY_BACKOFF_MAX_SECONDS"] == "1800"
    packer_defaults = env_of(find(render(BYTEFREEZER), "Deployment", "bf-bytefreezer-packer"))
    assert packer_defaults["BYTEFREEZER_PACKER__RETRY_BACKOFF_SECONDS"] == "15"
    assert find(scaled, "Service", "bf-receiver-webhook")["spec"]["type"] == "NodePort"
    combined = render(BYTEFREEZER, scenario(BYTEFREEZER, "combined.yaml"))
    receiver = find(combined, "Deployment", "bf-bytefreezer-receiver")["spec"]["template"]["spec"]
    assert receiver["containers"][0]["image"] == "registry.example.com/bytefreezer/receiver:0.1.0"
    assert receiver["imagePullSecrets"] == [{"name": "regcred"}]
    assert (
        receiver["nodeSelector"] == {"workload": "ingest"}
        and receiver["tolerations"][0]["key"] == "dedicated"
    )
    piper = find(combined, "Deployment", "bf-bytefreezer-piper")["spec"]["template"]["spec"]
    assert "podAntiAffinity" in piper["affinity"]
    assert (
        find(combined, "PersistentVolumeClaim", "bf-bytefreezer-prometheus")["spec"][
            "storageClassName"
        ]
        == "fast-ssd"
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"receiver": {"replicaCount": "two"}}, "/receiver/replicaCount"),
        ({"monitoring": {"mode": "statsd"}}, "must be one of"),
        ({"global": {"deploymentType": "cloud"}}, "must be one of"),
        ({"s3": {"useSSL": "yes"}}, "/s3/useSSL"),
        ({"s3": {"serverSideEncryption": "aes"}}, "must be one of"),
        (
            {"s3": {"serverSideEncryption": "AES256", "kmsKeyId": "alias/x"}},
            "s3.kmsKeyId is used with s3.serverSideEncryption=aws:kms",
        ),
        (
            {"s3": {"endpoint": "s3.example.com"}},
            'external S3 at "s3.example.com" has no credentials',
        ),
        (
            {"s3": {"useIAMRole": True, "accessKey": "a", "secretKey": "b"}},
            "s3.useIAMRole=true ignores keys",
        ),
        ({"global": {"deploymentType": "managed"}}, "managed needs controlService.url"),
        (
            {"global": {"deploymentType": "managed"}, "controlService": {"url": "https://c"}},
            "give controlService.apiKey",
        ),
        ({"monitoring": {"enabled": True, "mode": "otlp_http"}}, "set monitoring.externalEndpoint"),
        ({"monitoring": {"prometheus": {"enabled": True}}}, "set monitoring.enabled=true"),
    ],
)
def test_bad_values_fail_with_an_actionable_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError) as info:
        render(BYTEFREEZER, values)
    assert message in str(info.value)


def test_proxy_chart(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    objects = render(PROXY, scenario(PROXY, "syslog-and-http.yaml"), release="edge")
    service = find(objects, "Service", "edge-proxy")
    ports = {(p["port"], p["protocol"]) for p in service["spec"]["ports"]}
    assert ports == {
        (5514, "UDP"),
        (6514, "TCP"),
        (5170, "TCP"),
        (8088, "TCP"),
        (2055, "UDP"),
        (24224, "TCP"),
        (6343, "UDP"),
        (2056, "UDP"),
    }
    deployment = find(objects, "Deployment", "edge-proxy")
    env = env_of(deployment)
    assert env["BYTEFREEZER_PROXY_KEY_SYSLOG_TCP"] == {
        "secret": "edge-proxy-keys",
        "key": "syslog-tcp-api-key",
    }
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "proxy",
        "--config",
        "/etc/bytefreezer/proxy.yaml",
    ]
    config = yaml.safe_load(find(objects, "ConfigMap", "edge-proxy-config")["data"]["proxy.yaml"])
    assert config["inputs"][1]["api_key"] == "${BYTEFREEZER_PROXY_KEY_SYSLOG_TCP}"
    # a forward input's shared key comes from the Secret too, never the ConfigMap
    assert config["inputs"][5]["shared_key"] == "${BYTEFREEZER_PROXY_KEY_FLUENT_SHARED}"
    assert "shared_key" not in config["inputs"][4]
    assert env["BYTEFREEZER_PROXY_KEY_FLUENT_SHARED"] == {
        "secret": "edge-proxy-keys",
        "key": "fluent-shared-key",
    }
    secret = find(objects, "Secret", "edge-proxy-keys")
    assert secret["stringData"]["fluent-shared-key"] == "s3cret-shared"
    for i in config["inputs"]:  # the rendered config is one the proxy takes
        name = "BYTEFREEZER_PROXY_KEY_" + i["name"].upper().replace("-", "_")
        monkeypatch.setenv(name, "bfk_key")
        monkeypatch.setenv(name + "_SHARED", "shared")
    text = find(objects, "ConfigMap", "edge-proxy-config")["data"]["proxy.yaml"]
    (tmp_path / "proxy.yaml").write_text(text)
    loaded = load_proxy_config(tmp_path / "proxy.yaml")
    assert loaded.inputs[5].type == "forward"
    bus = loaded.inputs[6]  # a nats input subscribes: no port, none in the Service
    assert (bus.servers, bus.subject, bus.stream, bus.port) == (
        ["nats://nats:4222"],
        "logs.>",
        "LOGS",
        None,
    )
    samples = loaded.inputs[7]
    assert (samples.type, samples.port, samples.receive_buffer_bytes) == ("sflow", 6343, 32 << 20)
    assert (loaded.inputs[8].type, loaded.inputs[8].port) == ("ebpf", 2056)
    assert config["receiver_url"] == "https://ingest.example.com"
    find(objects, "PersistentVolumeClaim", "edge-proxy-spool")
    assert (
        find(objects, "ServiceMonitor", "edge-proxy")["spec"]["endpoints"][0]["port"] == "metrics"
    )
    rule = find(objects, "PrometheusRule", "edge-proxy-alerts")
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"] == yaml.safe_load((PROXY / "files" / "proxy-alerts.yaml").read_text())
    existing = render(PROXY, scenario(PROXY, "existing-secret.yaml"), release="edge")
    assert not [o for o in existing if o["kind"] in ("Secret", "PersistentVolumeClaim")]


@pytest.mark.parametrize("chart", [BYTEFREEZER, PROXY], ids=["bytefreezer", "proxy"])
def test_readme_and_schema_are_generated_from_the_values(chart: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("chartdoc", HELM / "chartdoc.py")
    assert spec and spec.loader
    chartdoc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chartdoc)
    assert chartdoc.undocumented(chart) == []
    assert (chart / "README.md").read_text() == chartdoc.render_readme(chart), (
        "run deploy/helm/chartdoc.py"
    )
    assert json.loads((chart / "values.schema.json").read_text()) == chartdoc.schema(chart)


def test_tls_from_a_kubernetes_secret() -> None:
    objects = render(BYTEFREEZER, scenario(BYTEFREEZER, "tls.yaml"))
    for name in ("receiver", "piper", "packer", "control"):
        deployment = find(objects, "Deployment", f"bf-bytefreezer-{name}")
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert {"name": "tls", "secret": {"secretName": "bytefreezer-tls"}} in pod["volumes"]
        assert {"name": "tls", "mountPath": "/etc/bytefreezer/tls", "readOnly": True} in container[
            "volumeMounts"
        ]
        env = env_of(deployment)
        assert env["BYTEFREEZER_TLS__CERT_FILE"] == "/etc/bytefreezer/tls/tls.crt"
        assert env["BYTEFREEZER_CONTROL__URL"] == "https://bf-bytefreezer-control:8082"
        assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    with pytest.raises(helm_python.HelmError) as info:
        render(BYTEFREEZER, {"tls": {"enabled": True}})
    assert "tls.enabled=true needs tls.existingSecret" in str(info.value)


def test_proxy_tls_from_a_kubernetes_secret() -> None:
    objects = render(PROXY, scenario(PROXY, "syslog-and-http.yaml"), release="edge")
    config = yaml.safe_load(find(objects, "ConfigMap", "edge-proxy-config")["data"]["proxy.yaml"])
    assert config["tls_cert_file"] == "/etc/bytefreezer/tls/tls.crt"
    pod = find(objects, "Deployment", "edge-proxy")["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "edge-proxy-tls"}} in pod["volumes"]
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def _proxy_input(**fields: Any) -> dict[str, Any]:
    return {
        "name": "in",
        "port": 2514,
        "tenant": "acme",
        "dataset": "logs",
        "apiKey": "k",
        **fields,
    }


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([_proxy_input(type="file", paths=["/var/log/a.log"])], "set kind: DaemonSet"),
        ([_proxy_input(type="journald")], "journald inputs read the host's journal"),
        ([_proxy_input(type="kinesis", stream="s")], "kinesis inputs need AWS credentials"),
        ([_proxy_input(type="kinesis")], "a kinesis input needs stream"),
        ([_proxy_input(type="sqs", queueUrl="q")], "sqs inputs need AWS credentials"),
        ([_proxy_input(type="sqs")], "an sqs input needs queueUrl"),
        (
            [_proxy_input(type="amqp")],
            "type must be udp, tcp, syslog, http, netflow, sflow, ebpf, forward, nats, relp, "
            "kinesis, sqs, mqtt, kafka or file",
        ),
        ([_proxy_input(type="kafka", servers=["k:9092"])], "a kafka input needs servers"),
        ([_proxy_input(type="tcp", sharedKey="s")], "sharedKey is for forward inputs"),
        ([_proxy_input(type="tcp", caSecret="ca")], "caSecret (a Secret with ca.crt"),
        (
            [_proxy_input(type="kafka", servers=["k:9092"], topics=["t"], caSecret="ca")],
            "caSecret is the CA of brokers reached over TLS: set tls: true",
        ),
        (
            [_proxy_input(type="syslog", protocol="tcp", receiveBufferBytes=1 << 20)],
            "receiveBufferBytes is for UDP inputs",
        ),
        ([_proxy_input(type="mqtt")], "an mqtt input needs servers (one broker) and subject"),
        ([_proxy_input(type="tcp", password="p", username="u")], "password is for mqtt and kafka"),
        (
            [_proxy_input(type="kafka", servers=["k:9092"], topics=["t"], password="p")],
            "a password needs a username",
        ),
    ],
)
def test_proxy_bad_inputs_fail_with_an_actionable_message(
    inputs: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(helm_python.HelmError) as info:
        render(PROXY, {"inputs": inputs})
    assert message in str(info.value)


def test_proxy_daemonset_follows_each_nodes_container_logs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    objects = render(PROXY, scenario(PROXY, "daemonset.yaml"), release="edge")
    daemonset = find(objects, "DaemonSet", "edge-proxy")
    assert not [o for o in objects if o["kind"] in ("Deployment", "PersistentVolumeClaim")]
    assert "replicas" not in daemonset["spec"]
    pod = daemonset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/var/log", "/var/lib/docker/containers"):  # the node's logs, read-only
        assert mounts[path]["readOnly"] is True
        assert volumes[mounts[path]["name"]]["hostPath"] == {"path": path, "type": "Directory"}
    # the spool and the files' checkpoints stay on the node across restarts
    assert volumes["spool"]["hostPath"] == {
        "path": "/var/lib/bytefreezer-proxy/edge-proxy",
        "type": "DirectoryOrCreate",
    }
    assert mounts["/spool"]["name"] == "spool"
    assert pod["securityContext"]["runAsUser"] == 0  # the runtimes' log files are root's
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    service = find(objects, "Service", "edge-proxy")  # the syslog listener only
    assert [(p["port"], p["protocol"]) for p in service["spec"]["ports"]] == [(5514, "UDP")]
    text = find(objects, "ConfigMap", "edge-proxy-config")["data"]["proxy.yaml"]
    for name in ("PODS", "DOCKER", "SYSLOG"):
        monkeypatch.setenv(f"BYTEFREEZER_PROXY_KEY_{name}", "bfk_key")
    (tmp_path / "proxy.yaml").write_text(text)
    loaded = load_proxy_config(tmp_path / "proxy.yaml")  # a configuration the proxy takes
    pods, docker = loaded.inputs[0], loaded.inputs[1]
    assert (pods.type, pods.paths, pods.container_format) == (
        "file",
        ["/var/log/pods/*/*/*.log"],
        "cri",
    )
    assert (docker.container_format, docker.read_from) == ("docker", "end")
    assert loaded.spool_dir.parent == Path("/spool")  # on the node's directory
    values = scenario(PROXY, "daemonset.yaml")
    values["daemonset"]["runAsRoot"] = False
    rootless = render(PROXY, values, release="edge")
    context = find(rootless, "DaemonSet", "edge-proxy")["spec"]["template"]["spec"]
    assert context["securityContext"]["runAsUser"] == 10001
    said = notes(PROXY, scenario(PROXY, "daemonset.yaml"))
    assert "pods: file following /var/log/pods/*/*/*.log (cri container logs) on every node" in said
    assert "syslog: syslog/udp on port 5514" in said


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"inputs": [_proxy_input(type="file")]}, "a file input needs paths"),
        (
            {"inputs": [_proxy_input(type="file", paths=["/srv/app/*.log"])]},
            "path /srv/app/*.log is not under daemonset.hostPaths",
        ),
        (
            {"inputs": [_proxy_input(type="file", paths=["/var/log/x"], containerFormat="crio")]},
            "containerFormat is cri (containerd, CRI-O) or docker",
        ),
        (
            {"kind": "StatefulSet", "inputs": [_proxy_input(type="tcp")]},
            "value must be one of 'Deployment', 'DaemonSet'",
        ),
    ],
)
def test_proxy_daemonset_values_are_checked(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError) as info:
        render(PROXY, {"kind": "DaemonSet", **values})
    assert message in str(info.value)


def test_proxy_alerts_need_its_metrics() -> None:
    values = {
        "inputs": [_proxy_input(type="udp")],
        "monitoring": {"prometheusRule": {"enabled": True}},
    }
    with pytest.raises(helm_python.HelmError) as info:
        render(PROXY, values)
    assert "monitoring.prometheusRule.enabled=true alerts on the proxy's /metrics" in str(
        info.value
    )
    values["monitoring"]["enabled"] = True  # type: ignore[index]
    assert find(render(PROXY, values, release="edge"), "PrometheusRule", "edge-proxy-alerts")


def test_proxy_relp_input_listens_on_tcp() -> None:
    objects = render(PROXY, {"inputs": [_proxy_input(type="relp")]}, release="edge")
    ports = find(objects, "Service", "edge-proxy")["spec"]["ports"]
    assert {"name": "in-in", "port": 2514, "targetPort": 2514, "protocol": "TCP"} in ports
    config = yaml.safe_load(find(objects, "ConfigMap", "edge-proxy-config")["data"]["proxy.yaml"])
    assert config["inputs"][0]["type"] == "relp"


def test_proxy_kinesis_input_with_a_role_or_a_secret() -> None:
    objects = render(PROXY, scenario(PROXY, "kinesis.yaml"), release="edge")
    config = yaml.safe_load(find(objects, "ConfigMap", "edge-proxy-config")["data"]["proxy.yaml"])
    kds = config["inputs"][0]
    assert (kds["type"], kds["stream"], kds["region"], kds["read_from"]) == (
        "kinesis", "app-events", "eu-west-1", "end",
    )  # fmt: skip
    assert "port" not in kds and "host" not in kds
    queue = config["inputs"][1]
    assert (queue["type"], queue["s3_notifications"], queue["visibility_timeout_seconds"]) == (
        "sqs", True, 600,
    )  # fmt: skip
    assert queue["queue_url"].endswith("/s3-events") and "port" not in queue
    account = find(objects, "ServiceAccount", "edge-proxy")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("edge-proxy")
    pod = find(objects, "Deployment", "edge-proxy")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "edge-proxy"
    ports = find(objects, "Service", "edge-proxy")["spec"]["ports"]
    assert [p["port"] for p in ports] == [2514]  # the relp input; the kinesis input listens on none
    assert env_of(find(objects, "Deployment", "edge-proxy"))["AWS_REGION"] == "eu-west-1"
    with_secret = render(
        PROXY,
        {
            "inputs": [_proxy_input(type="kinesis", stream="s")],
            "aws": {"existingSecret": "aws-keys"},
        },
        release="edge",
    )
    container = find(with_secret, "Deployment", "edge-proxy")["spec"]["template"]["spec"][
        "containers"
    ][0]
    refs = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"]}
    assert refs["AWS_ACCESS_KEY_ID"] == {"name": "aws-keys", "key": "AWS_ACCESS_KEY_ID"}
    assert refs["AWS_SECRET_ACCESS_KEY"] == {"name": "aws-keys", "key": "AWS_SECRET_ACCESS_KEY"}
    assert not [o for o in with_secret if o["kind"] == "ServiceAccount"]


def test_proxy_forward_users_come_from_the_secret(tmp_path: Path) -> None:
    from bytefreezer.ingress.proxy.config import load_proxy_config

    users = [{"username": "edge", "password": "pw-1"}, {"username": "other", "password": "pw-2"}]
    source = _proxy_input(name="fluent", type="forward", sharedKey="s3cret", users=users)
    objects = render(PROXY, {"inputs": [source]}, release="edge")
    secret = find(objects, "Secret", "edge-proxy-keys")["stringData"]
    assert (secret["fluent-user-0"], secret["fluent-user-1"]) == ("pw-1", "pw-2")
    text = find(objects, "ConfigMap", "edge-proxy-config")["data"]["proxy.yaml"]
    assert "pw-1" not in text  # passwords only through the Secret
    container = find(objects, "Deployment", "edge-proxy")["spec"]["template"]["spec"]["containers"][
        0
    ]
    env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in container["env"]
        if "valueFrom" in e
    }
    assert env["BYTEFREEZER_PROXY_KEY_FLUENT_USER_1"] == "fluent-user-1"
    # the proxy reads the rendered file with the Secret's values in its environment
    variables = {
        "BYTEFREEZER_PROXY_KEY_FLUENT": "k",
        "BYTEFREEZER_PROXY_KEY_FLUENT_SHARED": "s3cret",
        "BYTEFREEZER_PROXY_KEY_FLUENT_USER_0": "pw-1",
        "BYTEFREEZER_PROXY_KEY_FLUENT_USER_1": "pw-2",
    }
    config = tmp_path / "proxy.yaml"
    config.write_text(text)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        loaded = load_proxy_config(config)
    (forward,) = loaded.inputs
    assert [(u.username, u.password.get_secret_value()) for u in forward.users] == [
        ("edge", "pw-1"),
        ("other", "pw-2"),
    ]
    with pytest.raises(helm_python.HelmError) as info:
        render(PROXY, {"inputs": [_proxy_input(type="forward", users=users)]})
    assert "users are proven in the shared-key handshake; set sharedKey" in str(info.value)


def test_proxy_kafka_input_with_its_sasl_password_from_the_secret(tmp_path: Path) -> None:
    from bytefreezer.ingress.proxy.config import load_proxy_config

    source = _proxy_input(
        name="events", type="kafka", servers=["kafka-0:9093", "kafka-1:9093"],
        topics=["app-logs", "^audit-.*"], groupId="edge", readFrom="end", username="edge",
        password="pw-7", saslMechanism="SCRAM-SHA-512", tls=True, caSecret="kafka-ca",
        kafkaOptions={"fetch.max.bytes": "1048576", "client.rack": "eu-1a"},
    )  # fmt: skip
    source.pop("port")
    objects = render(PROXY, {"inputs": [source]}, release="edge")
    assert find(objects, "Secret", "edge-proxy-keys")["stringData"]["events-password"] == "pw-7"
    text = find(objects, "ConfigMap", "edge-proxy-config")["data"]["proxy.yaml"]
    assert "pw-7" not in text  # the password only through the Secret
    services = [o["metadata"]["name"] for o in objects if o["kind"] == "Service"]
    assert services == ["edge-proxy-api"]  # it listens on no port
    _valid(objects)
    config = tmp_path / "proxy.yaml"
    config.write_text(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BYTEFREEZER_PROXY_KEY_EVENTS", "k")
        patch.setenv("BYTEFREEZER_PROXY_KEY_EVENTS_PASSWORD", "pw-7")
        (loaded,) = load_proxy_config(config).inputs
    assert (loaded.type, loaded.servers, loaded.topics, loaded.group_id, loaded.read_from) == (
        "kafka", ["kafka-0:9093", "kafka-1:9093"], ["app-logs", "^audit-.*"], "edge", "end",
    )  # fmt: skip
    assert (loaded.username, loaded.sasl_mechanism, loaded.tls) == ("edge", "SCRAM-SHA-512", True)
    assert loaded.password is not None and loaded.password.get_secret_value() == "pw-7"
    assert loaded.kafka_options == {"fetch.max.bytes": "1048576", "client.rack": "eu-1a"}
    # the brokers' CA: the Secret's ca.crt mounted where the input's ca_file says
    assert str(loaded.ca_file) == "/etc/bytefreezer/ca/events/ca.crt"
    pod = find(objects, "Deployment", "edge-proxy")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "ca-events"]
    assert volume["secret"] == {
        "secretName": "kafka-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["ca-events"]["mountPath"] == "/etc/bytefreezer/ca/events"


def test_proxy_mqtt_input_with_its_password_from_the_secret(tmp_path: Path) -> None:
    from bytefreezer.ingress.proxy.config import load_proxy_config

    source = _proxy_input(
        name="iot", type="mqtt", servers=["mqtt://mosquitto:1883"], subject="sensors/#", qos=0,
        durable="edge-1", username="edge", password="pw-9",
    )  # fmt: skip
    source.pop("port")
    objects = render(PROXY, {"inputs": [source]}, release="edge")
    assert find(objects, "Secret", "edge-proxy-keys")["stringData"]["iot-password"] == "pw-9"
    text = find(objects, "ConfigMap", "edge-proxy-config")["data"]["proxy.yaml"]
    assert "pw-9" not in text  # the password only through the Secret
    # it listens on no port: no Service for inputs (one without ports is invalid), the API's
    services = [o["metadata"]["name"] for o in objects if o["kind"] == "Service"]
    assert services == ["edge-proxy-api"]
    _valid(objects)
    config = tmp_path / "proxy.yaml"
    config.write_text(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BYTEFREEZER_PROXY_KEY_IOT", "k")
        patch.setenv("BYTEFREEZER_PROXY_KEY_IOT_PASSWORD", "pw-9")
        (loaded,) = load_proxy_config(config).inputs
    assert (loaded.type, loaded.servers, loaded.subject, loaded.qos, loaded.durable) == (
        "mqtt", ["mqtt://mosquitto:1883"], "sensors/#", 0, "edge-1",
    )  # fmt: skip
    assert loaded.username == "edge" and loaded.password is not None
    assert loaded.password.get_secret_value() == "pw-9"
