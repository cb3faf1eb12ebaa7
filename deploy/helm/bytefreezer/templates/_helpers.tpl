{{/* Names and labels ---------------------------------------------------------------- */}}

{{- define "bytefreezer.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bytefreezer.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Labels of one component: call with (dict "root" $ "component" "receiver") */}}
{{- define "bytefreezer.componentLabels" -}}
{{ include "bytefreezer.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "bytefreezer.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "bytefreezer.image" -}}
{{- $registry := .root.Values.global.imageRegistry -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if $registry -}}{{ printf "%s/%s:%s" $registry .image.repository $tag }}{{- else -}}{{ printf "%s:%s" .image.repository $tag }}{{- end -}}
{{- end -}}

{{- define "bytefreezer.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "bytefreezer.storageClass" -}}
{{- with .Values.global.storageClass }}
storageClassName: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Which control service -------------------------------------------------------------- */}}

{{- define "bytefreezer.inClusterControl" -}}
{{- if and (eq .Values.global.deploymentType "on_prem") (not .Values.controlService.url) .Values.controlService.enabled -}}true{{- end -}}
{{- end -}}

{{- define "bytefreezer.scheme" -}}
{{- ternary "https" "http" .Values.tls.enabled -}}
{{- end -}}

{{- define "bytefreezer.controlUrl" -}}
{{- if include "bytefreezer.inClusterControl" . -}}
{{- printf "%s://%s-control:8082" (include "bytefreezer.scheme" .) (include "bytefreezer.fullname" .) -}}
{{- else -}}
{{- .Values.controlService.url -}}
{{- end -}}
{{- end -}}

{{- define "bytefreezer.controlSecretName" -}}
{{- if and (not (include "bytefreezer.inClusterControl" .)) .Values.controlService.existingSecret -}}
{{- .Values.controlService.existingSecret -}}
{{- else -}}
{{- printf "%s-control" (include "bytefreezer.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* S3 credentials -------------------------------------------------------------------- */}}

{{- define "bytefreezer.s3SecretName" -}}
{{- if .Values.s3.existingSecret -}}
{{- .Values.s3.existingSecret -}}
{{- else -}}
{{- printf "%s-s3" (include "bytefreezer.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The in-namespace MinIO (bundled, or a `minio` service beside the release) */}}
{{- define "bytefreezer.s3IsMinio" -}}
{{- if or .Values.minio.enabled (eq .Values.s3.endpoint "minio:9000") -}}true{{- end -}}
{{- end -}}

{{- define "bytefreezer.s3UsesKeys" -}}
{{- if and (not .Values.s3.useIAMRole) (or .Values.s3.existingSecret .Values.s3.accessKey (include "bytefreezer.s3IsMinio" .)) -}}true{{- end -}}
{{- end -}}

{{/* Checks that fail the install with an actionable message ----------------------------- */}}

{{- define "bytefreezer.validateValues" -}}
{{- $problems := list -}}
{{- if and (not (include "bytefreezer.s3IsMinio" .)) (not .Values.s3.useIAMRole) (not .Values.s3.existingSecret) (or (not .Values.s3.accessKey) (not .Values.s3.secretKey)) -}}
{{- $problems = append $problems (printf "external S3 at %q has no credentials: set s3.accessKey and s3.secretKey, or s3.existingSecret, or s3.useIAMRole=true (or minio.enabled=true for the bundled MinIO)" .Values.s3.endpoint) -}}
{{- end -}}
{{- if and .Values.s3.accessKey (not .Values.s3.secretKey) -}}
{{- $problems = append $problems "s3.accessKey is set without s3.secretKey" -}}
{{- end -}}
{{- if and .Values.s3.useIAMRole (or .Values.s3.accessKey .Values.s3.existingSecret) -}}
{{- $problems = append $problems "s3.useIAMRole=true ignores keys: unset s3.accessKey/s3.secretKey/s3.existingSecret, or set s3.useIAMRole=false" -}}
{{- end -}}
{{- if and .Values.s3.kmsKeyId (not (hasPrefix "aws:kms" .Values.s3.serverSideEncryption)) -}}
{{- $problems = append $problems "s3.kmsKeyId is used with s3.serverSideEncryption=aws:kms (or aws:kms:dsse): set it, or unset s3.kmsKeyId" -}}
{{- end -}}
{{- if and (eq .Values.global.deploymentType "managed") (not .Values.controlService.url) -}}
{{- $problems = append $problems "global.deploymentType=managed needs controlService.url (and controlService.apiKey or controlService.existingSecret)" -}}
{{- end -}}
{{- if and .Values.controlService.url (not .Values.controlService.apiKey) (not .Values.controlService.existingSecret) -}}
{{- $problems = append $problems "controlService.url is set: give controlService.apiKey or controlService.existingSecret to authenticate to it" -}}
{{- end -}}
{{- if and (eq .Values.global.deploymentType "on_prem") (not .Values.controlService.url) (not .Values.controlService.enabled) -}}
{{- $problems = append $problems "no control service: set controlService.enabled=true, or controlService.url with a key" -}}
{{- end -}}
{{- if and .Values.monitoring.enabled (ne .Values.monitoring.mode "prometheus") (not .Values.monitoring.externalEndpoint) -}}
{{- $problems = append $problems (printf "monitoring.mode=%s pushes metrics: set monitoring.externalEndpoint" .Values.monitoring.mode) -}}
{{- end -}}
{{- if and (or .Values.monitoring.prometheus.enabled .Values.monitoring.victoriametrics.enabled .Values.monitoring.serviceMonitor.enabled) (or (not .Values.monitoring.enabled) (ne .Values.monitoring.mode "prometheus")) -}}
{{- $problems = append $problems "a Prometheus, VictoriaMetrics or ServiceMonitor scrapes /metrics: set monitoring.enabled=true and monitoring.mode=prometheus" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) -}}
{{- $problems = append $problems "tls.enabled=true needs tls.existingSecret (a Secret with tls.crt, tls.key and ca.crt)" -}}
{{- end -}}
{{- if $problems -}}
{{- fail (printf "\n\nbytefreezer: invalid values:\n  - %s\n" (join "\n  - " $problems)) -}}
{{- end -}}
{{- end -}}

{{/* The environment every component shares -------------------------------------------- */}}

{{- define "bytefreezer.env" -}}
- name: BYTEFREEZER_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: BYTEFREEZER_DATA_DIR
  value: /data
- name: BYTEFREEZER_STORAGE__BACKEND
  value: s3
- name: BYTEFREEZER_STORAGE__S3__ENDPOINT
  value: {{ .Values.s3.endpoint | quote }}
- name: BYTEFREEZER_STORAGE__S3__REGION
  value: {{ .Values.s3.region | quote }}
- name: BYTEFREEZER_STORAGE__S3__USE_SSL
  value: {{ .Values.s3.useSSL | quote }}
- name: BYTEFREEZER_STORAGE__S3__USE_IAM_ROLE
  value: {{ .Values.s3.useIAMRole | quote }}
{{- with .Values.s3.serverSideEncryption }}
- name: BYTEFREEZER_STORAGE__S3__SERVER_SIDE_ENCRYPTION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.kmsKeyId }}
- name: BYTEFREEZER_STORAGE__S3__KMS_KEY_ID
  value: {{ . | quote }}
{{- end }}
{{- if include "bytefreezer.s3UsesKeys" . }}
- name: BYTEFREEZER_STORAGE__S3__ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "bytefreezer.s3SecretName" . }}
      key: access-key
- name: BYTEFREEZER_STORAGE__S3__SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "bytefreezer.s3SecretName" . }}
      key: secret-key
{{- end }}
- name: BYTEFREEZER_BUCKETS__INTAKE
  value: {{ .Values.s3.buckets.intake | quote }}
- name: BYTEFREEZER_BUCKETS__PIPER
  value: {{ .Values.s3.buckets.piper | quote }}
- name: BYTEFREEZER_BUCKETS__GEOIP
  value: {{ .Values.s3.buckets.geoip | quote }}
- name: BYTEFREEZER_CONTROL__URL
  value: {{ include "bytefreezer.controlUrl" . | quote }}
- name: BYTEFREEZER_CONTROL__API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "bytefreezer.controlSecretName" . }}
      key: api-key
- name: BYTEFREEZER_CONTROL__TIMEOUT_SECONDS
  value: {{ .Values.controlService.timeoutSeconds | quote }}
{{- if .Values.tls.enabled }}
- name: BYTEFREEZER_TLS__CERT_FILE
  value: /etc/bytefreezer/tls/tls.crt
- name: BYTEFREEZER_TLS__KEY_FILE
  value: /etc/bytefreezer/tls/tls.key
- name: BYTEFREEZER_CONTROL__CA_FILE
  value: /etc/bytefreezer/tls/ca.crt
{{- end }}
- name: BYTEFREEZER_MONITORING__MODE
  value: {{ ternary .Values.monitoring.mode "none" .Values.monitoring.enabled | quote }}
{{- if and .Values.monitoring.enabled .Values.monitoring.externalEndpoint }}
- name: BYTEFREEZER_MONITORING__EXTERNAL_ENDPOINT
  value: {{ .Values.monitoring.externalEndpoint | quote }}
{{- end }}
{{- end -}}

{{/* The certificate volume and its mount (TLS on) ----------------------------------- */}}

{{- define "bytefreezer.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
{{- end }}
{{- end -}}

{{- define "bytefreezer.tlsMount" -}}
{{- if .Values.tls.enabled }}
- {name: tls, mountPath: /etc/bytefreezer/tls, readOnly: true}
{{- end }}
{{- end -}}

{{/* Pod security, shared by every component ------------------------------------------ */}}

{{- define "bytefreezer.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "bytefreezer.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{/* The scrape jobs of the bundled Prometheus or VictoriaMetrics: this release's services and
their port named `metrics`, found by Kubernetes service discovery. */}}
{{- define "bytefreezer.scrapeConfig" -}}
global:
  scrape_interval: 30s
scrape_configs:
  - job_name: bytefreezer
    kubernetes_sd_configs:
      - role: endpoints
        namespaces:
          names: [{{ .Release.Namespace | quote }}]
    relabel_configs:
      - source_labels: [__meta_kubernetes_service_label_app_kubernetes_io_instance]
        regex: {{ .Release.Name | quote }}
        action: keep
      - source_labels: [__meta_kubernetes_service_label_app_kubernetes_io_component]
        regex: receiver|piper|packer
        action: keep
      - source_labels: [__meta_kubernetes_endpoint_port_name]
        regex: metrics
        action: keep
      - source_labels: [__meta_kubernetes_service_label_app_kubernetes_io_component]
        target_label: component
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
{{- end }}
