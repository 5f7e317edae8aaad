{{/*
Names and labels shared by the templates.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "tokafka-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects (at most 63 characters, a DNS label): fullnameOverride,
else the release name when it contains the chart name, else "<release>-<chart>".
*/}}
{{- define "tokafka-operator.fullname" -}}
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

{{/*
The name of cluster-scoped objects (ClusterRole, ClusterRoleBinding): the full name plus the
namespace, so releases of the same name in two namespaces do not claim the same objects.
*/}}
{{- define "tokafka-operator.clusterName" -}}
{{- printf "%s-%s" (include "tokafka-operator.fullname" .) .Release.Namespace }}
{{- end }}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "tokafka-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "tokafka-operator.labels" -}}
helm.sh/chart: {{ include "tokafka-operator.chart" . }}
{{ include "tokafka-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator pods (immutable in a Deployment: never add to them). */}}
{{- define "tokafka-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokafka-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "tokafka-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokafka-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository and tag (the chart's appVersion by default). */}}
{{- define "tokafka-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
