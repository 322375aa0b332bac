{{/* Labels every object carries. */}}
{{- define "dnstune.labels" -}}
app.kubernetes.io/part-of: dnstune
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Labels of one component (webhook, node): also its pods' selector. */}}
{{- define "dnstune.selector" -}}
app.kubernetes.io/name: dnstune
app.kubernetes.io/component: {{ . }}
{{- end -}}

{{- define "dnstune.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "dnstune.pullPolicy" -}}
{{- with .Values.image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end -}}

{{/* The webhook's ServiceAccount subject. */}}
{{- define "dnstune.webhookSubject" -}}
- kind: ServiceAccount
  name: dnstune-webhook
  namespace: {{ .Release.Namespace }}
{{- end -}}

{{- define "dnstune.gcThresh" -}}
{{ join "," .Values.node.gcThresh }}
{{- end -}}
