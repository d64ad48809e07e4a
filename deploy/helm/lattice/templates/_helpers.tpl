{{/* Names, labels and images shared by every template. */}}

{{- define "lattice.labels" -}}
app.kubernetes.io/part-of: lattice
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "name" "gateway"). */}}
{{- define "lattice.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* <registry>/<name>:<tag>, or @<digest> when one is set. */}}
{{- define "lattice.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- if .digest -}}
{{ printf "%s/%s@%s" $registry .name .digest }}
{{- else -}}
{{ printf "%s/%s:%s" $registry .name (.tag | default .root.Values.image.tag) }}
{{- end -}}
{{- end -}}

{{/* The Redis URL every service gets, as an env entry. */}}
{{- define "lattice.redisEnv" -}}
{{- if .Values.redis.existingSecret }}
- name: LATTICE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: url
{{- else if eq .Values.redis.mode "bundled" }}
- name: LATTICE_REDIS_URL
  value: {{ printf "redis://%s-redis:6379/0" .Release.Name | quote }}
{{- else }}
- name: LATTICE_REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- end }}
{{- end -}}

{{/* Pod and container security settings shared by the Lattice services. */}}
{{- define "lattice.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "lattice.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "lattice.imageAnnotation" -}}
checkov.io/skip1: CKV_K8S_43=Images are pinned by tag unless a digest is set (values <service>.digest); releases set digests.
{{- end -}}

{{/* A NetworkPolicy peer: the pods of one component. */}}
{{- define "lattice.from" -}}
- podSelector:
    matchLabels:
      {{- include "lattice.selector" (dict "root" .root "name" .name) | nindent 6 }}
{{- end -}}
