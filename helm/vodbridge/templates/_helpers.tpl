{{/* Chart name. */}}
{{- define "vodbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release already contains the chart name. */}}
{{- define "vodbridge.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Common labels. */}}
{{- define "vodbridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "vodbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels. */}}
{{- define "vodbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vodbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "vodbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vodbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret mounted at /etc/vodbridge/secrets, if any. */}}
{{- define "vodbridge.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else if .Values.secrets }}
{{- include "vodbridge.fullname" . }}
{{- end }}
{{- end }}

{{/*
The workload: a Deployment, or a StatefulSet when the push spool needs a volume per pod.
*/}}
{{- define "vodbridge.workloadKind" -}}
{{- if .Values.spool.enabled }}StatefulSet{{ else }}Deployment{{ end }}
{{- end }}

{{/*
Replicas at which pullers use up the account's VOD request budget: each pull loop makes at
most 1000 / apiLatencyMs calls per second of each action, so requestsPerSec × apiLatencyMs ÷
(1000 × loopsPerReplica), rounded up; more replicas would only share the same budget.
*/}}
{{- define "vodbridge.kedaBudgetReplicas" -}}
{{- $b := .Values.keda.budget }}
{{- $per := mul 1000 (int $b.loopsPerReplica) }}
{{- max 1 (div (sub (add (mul (int $b.requestsPerSec) (int $b.apiLatencyMs)) $per) 1) $per) }}
{{- end }}

{{/* The ScaledObject's maximum: keda.maxReplicaCount, else the budget's replica ceiling. */}}
{{- define "vodbridge.kedaMaxReplicas" -}}
{{- if .Values.keda.maxReplicaCount }}{{ .Values.keda.maxReplicaCount }}{{ else }}{{ include "vodbridge.kedaBudgetReplicas" . }}{{ end }}
{{- end }}

{{/*
The backlog query: every replica reports the same queue per source, so the maximum per
source, summed over the release's sources.
*/}}
{{- define "vodbridge.kedaQuery" -}}
{{- if .Values.keda.query }}
{{- .Values.keda.query }}
{{- else if eq .Values.keda.signal "backlog" }}
{{- printf "sum(max by (source) (vodbridge_vod_backlog{namespace=%q, service=%q}))" .Release.Namespace (include "vodbridge.fullname" .) }}
{{- else }}
{{- printf "sum(rate(vodbridge_pull_full_total{namespace=%q, service=%q}[2m]))" .Release.Namespace (include "vodbridge.fullname" .) }}
{{- end }}
{{- end }}
