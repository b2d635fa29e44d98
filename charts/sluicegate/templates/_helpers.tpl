{{- define "sluicegate.poolName" -}}
{{- default .Release.Name .Values.inferencePool.name | trunc 58 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluicegate.name" -}}
{{- printf "%s-epp" (include "sluicegate.poolName" .) -}}
{{- end -}}

{{- define "sluicegate.selectorLabels" -}}
app.kubernetes.io/name: sluicegate
app.kubernetes.io/instance: {{ .Release.Name }}
inferencepool: {{ include "sluicegate.name" . }}
{{- end -}}

{{- define "sluicegate.labels" -}}
{{ include "sluicegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sluicegate.image" -}}
{{- $i := .Values.inferenceExtension.image -}}
{{- printf "%s/%s:%s" $i.hub $i.name (default .Chart.AppVersion $i.tag) -}}
{{- end -}}

{{- define "sluicegate.poolGroup" -}}
{{- index (splitList "/" .Values.inferencePool.apiVersion) 0 -}}
{{- end -}}

{{- define "sluicegate.activatorResource" -}}
{{- $t := .Values.activator.target -}}
{{- default (printf "%ss" (lower $t.kind)) $t.resource -}}
{{- end -}}

{{- define "sluicegate.activatorGroup" -}}
{{- $v := .Values.activator.target.apiVersion -}}
{{- if contains "/" $v }}{{ index (splitList "/" $v) 0 }}{{ end -}}
{{- end -}}
