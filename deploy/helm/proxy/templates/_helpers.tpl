{{- define "proxy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "proxy.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
{{- end -}}

{{- define "proxy.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-keys" (include "proxy.fullname" .)) -}}
{{- end -}}

{{- define "proxy.listens" -}}
{{- if not (has .type (list "nats" "kinesis" "sqs" "mqtt" "kafka" "file")) -}}true{{- end -}}
{{- end -}}

{{- define "proxy.protocol" -}}
{{- if or (has .type (list "udp" "netflow" "sflow" "ebpf")) (and (eq .type "syslog") (ne (.protocol | default "udp") "tcp")) -}}UDP{{- else -}}TCP{{- end -}}
{{- end -}}

{{- define "proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ .Values.serviceAccount.name | default (include "proxy.fullname" .) }}{{- else -}}{{ .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "proxy.envName" -}}
{{- printf "BYTEFREEZER_PROXY_KEY_%s" (. | upper | replace "-" "_") -}}
{{- end -}}

{{- define "proxy.caVolume" -}}
{{- printf "ca-%s" (. | lower | replace "_" "-") | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "proxy.validateValues" -}}
{{- $problems := list -}}
{{- if not .Values.inputs -}}{{- $problems = append $problems "inputs: give at least one listener" -}}{{- end -}}
{{- range .Values.inputs -}}
{{- if and (eq .type "file") (ne $.Values.kind "DaemonSet") -}}{{- $problems = append $problems (printf "inputs %q: file inputs read a node's files: set kind: DaemonSet (a proxy on every node, daemonset.hostPaths mounted), or run bytefreezer proxy on the host" .name) -}}{{- else if eq .type "journald" -}}{{- $problems = append $problems (printf "inputs %q: journald inputs read the host's journal with its journalctl; run bytefreezer proxy on the host" .name) -}}{{- else if not (has .type (list "udp" "tcp" "syslog" "http" "netflow" "sflow" "ebpf" "forward" "nats" "relp" "kinesis" "sqs" "mqtt" "kafka" "file")) -}}{{- $problems = append $problems (printf "inputs %q: type must be udp, tcp, syslog, http, netflow, sflow, ebpf, forward, nats, relp, kinesis, sqs, mqtt, kafka or file" .name) -}}{{- end -}}
{{- if and (eq .type "kinesis") (not .stream) -}}{{- $problems = append $problems (printf "inputs %q: a kinesis input needs stream" .name) -}}{{- end -}}
{{- if and (eq .type "sqs") (not .queueUrl) -}}{{- $problems = append $problems (printf "inputs %q: an sqs input needs queueUrl" .name) -}}{{- end -}}
{{- if and (has .type (list "kinesis" "sqs")) (not (or $.Values.aws.existingSecret $.Values.serviceAccount.annotations)) -}}{{- $problems = append $problems (printf "inputs %q: %s inputs need AWS credentials: aws.existingSecret, or serviceAccount.annotations for a role (IRSA)" .name .type) -}}{{- end -}}
{{- if and (eq .type "mqtt") (not (and .servers .subject)) -}}{{- $problems = append $problems (printf "inputs %q: an mqtt input needs servers (one broker) and subject (a topic filter)" .name) -}}{{- end -}}
{{- if and (eq .type "kafka") (not (and .servers .topics)) -}}{{- $problems = append $problems (printf "inputs %q: a kafka input needs servers (bootstrap brokers) and topics" .name) -}}{{- end -}}
{{- if and .password (not (has .type (list "mqtt" "kafka"))) -}}{{- $problems = append $problems (printf "inputs %q: password is for mqtt and kafka inputs" .name) -}}{{- end -}}
{{- if and .password (not .username) -}}{{- $problems = append $problems (printf "inputs %q: a password needs a username" .name) -}}{{- end -}}
{{- if and (eq .type "nats") (not (and .servers .subject)) -}}{{- $problems = append $problems (printf "inputs %q: a nats input needs servers and subject" .name) -}}{{- end -}}
{{- if and .receiveBufferBytes (ne (include "proxy.protocol" .) "UDP") -}}{{- $problems = append $problems (printf "inputs %q: receiveBufferBytes is for UDP inputs (udp, syslog over UDP, netflow, sflow, ebpf)" .name) -}}{{- end -}}
{{- if and .caSecret (ne .type "kafka") -}}{{- $problems = append $problems (printf "inputs %q: caSecret (a Secret with ca.crt, the CA of a kafka input's brokers) is for kafka inputs" .name) -}}{{- else if and .caSecret (not .tls) -}}{{- $problems = append $problems (printf "inputs %q: caSecret is the CA of brokers reached over TLS: set tls: true" .name) -}}{{- end -}}
{{- if and .sharedKey (ne .type "forward") -}}{{- $problems = append $problems (printf "inputs %q: sharedKey is for forward inputs" .name) -}}{{- end -}}
{{- if and .users (not .sharedKey) -}}{{- $problems = append $problems (printf "inputs %q: users are proven in the shared-key handshake; set sharedKey" .name) -}}{{- end -}}
{{- if and (eq .type "file") (not .paths) -}}{{- $problems = append $problems (printf "inputs %q: a file input needs paths (globs of the node's files under daemonset.hostPaths, /var/log/pods/*/*/*.log)" .name) -}}{{- end -}}
{{- if and (eq .type "file") .paths -}}{{- $input := .name -}}{{- range .paths -}}{{- $path := . -}}{{- $under := false -}}{{- range $.Values.daemonset.hostPaths -}}{{- if hasPrefix (printf "%s/" (trimSuffix "/" .)) $path -}}{{- $under = true -}}{{- end -}}{{- end -}}{{- if not $under -}}{{- $problems = append $problems (printf "inputs %q: path %s is not under daemonset.hostPaths (the node's directories mounted in the pod)" $input $path) -}}{{- end -}}{{- end -}}{{- end -}}
{{- if and .containerFormat (not (has .containerFormat (list "cri" "docker"))) -}}{{- $problems = append $problems (printf "inputs %q: containerFormat is cri (containerd, CRI-O) or docker (json-file)" .name) -}}{{- end -}}
{{- if not (and .name .tenant .dataset (or .port (has .type (list "nats" "kinesis" "sqs" "mqtt" "kafka" "file")))) -}}{{- $problems = append $problems (printf "inputs %q: name, port, tenant and dataset are required" (.name | default "?")) -}}{{- end -}}
{{- end -}}
{{- if and .Values.monitoring.prometheusRule.enabled (not .Values.monitoring.enabled) -}}{{- $problems = append $problems "monitoring.prometheusRule.enabled=true alerts on the proxy's /metrics: set monitoring.enabled=true (and a ServiceMonitor, or your own scrape)" -}}{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) -}}{{- $problems = append $problems "tls.enabled=true needs tls.existingSecret (a Secret with tls.crt and tls.key)" -}}{{- end -}}
{{- if $problems -}}{{- fail (printf "\n\nproxy: invalid values:\n  - %s\n" (join "\n  - " $problems)) -}}{{- end -}}
{{- end -}}
