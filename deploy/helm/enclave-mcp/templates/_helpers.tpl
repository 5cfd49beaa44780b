{{/*
Names and labels, in the usual shape: the release name, then the chart's, cut to the 63
characters Kubernetes allows in a name.
*/}}
{{- define "enclave-mcp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "enclave-mcp.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "enclave-mcp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "enclave-mcp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "enclave-mcp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "enclave-mcp.labels" -}}
helm.sh/chart: {{ include "enclave-mcp.chart" . }}
{{ include "enclave-mcp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The Secret holding the token, and its key: the operator's (token.existingSecret) or the
chart's.
*/}}
{{- define "enclave-mcp.tokenSecretName" -}}
{{- default (printf "%s-token" (include "enclave-mcp.fullname" .)) .Values.token.existingSecret }}
{{- end }}

{{- define "enclave-mcp.tokenSecretKey" -}}
{{- if .Values.token.existingSecret }}{{ required "token.existingSecretKey: name the key of token.existingSecret that holds the token" .Values.token.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/*
The token of the chart's Secret: token.value, else the one an earlier install generated
(kept across upgrades), else a new random one.
*/}}
{{- define "enclave-mcp.token" -}}
{{- if .Values.token.value }}
{{- $t := toString .Values.token.value }}
{{- if or (not (regexMatch "^[!-~]+$" $t)) (gt (len $t) 4096) }}
{{- fail "token.value: want printable ASCII without spaces, at most 4096 bytes (e.g. $(openssl rand -hex 24))" }}
{{- end }}
{{- $t }}
{{- else }}
{{- $old := lookup "v1" "Secret" .Release.Namespace (include "enclave-mcp.tokenSecretName" .) }}
{{- if and $old $old.data (hasKey $old.data "token") }}
{{- index $old.data "token" | b64dec }}
{{- else }}
{{- randAlphaNum 48 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The value checks that must fail at render time, with a message naming the value.
*/}}
{{- define "enclave-mcp.validate" -}}
{{- if and .Values.service.headless (ne .Values.service.type "ClusterIP") }}
{{- fail (printf "service.headless needs service.type ClusterIP, not %s" .Values.service.type) }}
{{- end }}
{{- if not (has .Values.service.type (list "ClusterIP" "NodePort" "LoadBalancer")) }}
{{- fail (printf "service.type %q: want ClusterIP, NodePort or LoadBalancer" .Values.service.type) }}
{{- end }}
{{- if not (has .Values.image.pullPolicy (list "IfNotPresent" "Never" "Always")) }}
{{- fail (printf "image.pullPolicy %q: want IfNotPresent, Never or Always" .Values.image.pullPolicy) }}
{{- end }}
{{- if eq .Values.backend "docker" }}
{{- if and (not .Values.docker.socketPath) (not .Values.docker.host) }}
{{- fail "docker.socketPath and docker.host are both empty: the server needs a Docker engine (mount the node's socket, or name an engine with docker.host)" }}
{{- end }}
{{- if and .Values.docker.socketPath (not (isAbs .Values.docker.socketPath)) }}
{{- fail (printf "docker.socketPath %q: want an absolute path on the node, e.g. /var/run/docker.sock" .Values.docker.socketPath) }}
{{- end }}
{{- end }}
{{- $_ := include "enclave-mcp.sessionIdle" . }}
{{- end }}

{{/*
session.timeout (seconds, sandbox_runtime's) as --session-idle's duration: whole seconds.
*/}}
{{- define "enclave-mcp.sessionIdle" -}}
{{- $t := float64 .Values.session.timeout }}
{{- if or (le $t 0.0) (ne $t (float64 (int64 $t))) }}
{{- fail (printf "session.timeout %v: want a positive whole number of seconds, e.g. 3600" .Values.session.timeout) }}
{{- end }}
{{- printf "%ds" (int64 $t) }}
{{- end }}

{{/*
The server's --config file: the sandbox defaults, the notebook image, the operator's policy,
the named sessions' settings and the declared tools; empty sections are left out, so the
server's own defaults apply.
*/}}
{{- define "enclave-mcp.config" -}}
{{- $cfg := dict }}
{{- $sandbox := deepCopy (default (dict) .Values.sandbox) }}
{{- with .Values.images.sandbox }}{{ $_ := set $sandbox "image" . }}{{ end }}
{{- if $sandbox }}{{ $_ := set $cfg "sandbox" $sandbox }}{{ end }}
{{- with .Values.images.notebook }}{{ $_ := set $cfg "notebook" (dict "image" .) }}{{ end }}
{{- with .Values.policy }}{{ $_ := set $cfg "policy" . }}{{ end }}
{{- $sessions := dict }}
{{- with .Values.images.session }}{{ $_ := set $sessions "image" . }}{{ end }}
{{- with .Values.session.allowedCommands }}{{ $_ := set $sessions "allowed_commands" . }}{{ end }}
{{- with .Values.session.scriptTypes }}{{ $_ := set $sessions "script_types" . }}{{ end }}
{{- if kindIs "slice" .Values.session.languages }}{{ $_ := set $sessions "languages" .Values.session.languages }}{{ end }}
{{- if $sessions }}{{ $_ := set $cfg "sessions" $sessions }}{{ end }}
{{- with .Values.tools }}{{ $_ := set $cfg "tools" . }}{{ end }}
{{- toPrettyJson $cfg }}
{{- end }}
