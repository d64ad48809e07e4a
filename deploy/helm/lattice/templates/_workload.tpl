{{/*
One Lattice service: ServiceAccount, Deployment and Service.
Arguments (dict):
  root        the chart's root context
  name        gateway | registry | inference | trainer
  values      that service's values
  readiness   the gRPC service its readiness probe asks about
  dataVolume  the volume mounted at /var/lib/lattice
  stateful    true: one replica, Recreate (SQLite / job files on a RWO or RWX claim)
  token       true: mount the service account token (the trainer submits PyTorchJobs)
*/}}
{{- define "lattice.workload" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $name := .name -}}
{{- $full := printf "%s-%s" $root.Release.Name $name -}}
{{- /* A TLS listener (the gateway's public certificate, or mTLS for the others):
       Kubernetes' grpc: probes speak plaintext only, so probes are TCP checks. */ -}}
{{- $tlsListener := ternary $root.Values.tls.gateway.secretName $root.Values.tls.mtls.enabled (eq $name "gateway") -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $full }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lattice.labels" $root | nindent 4 }}
automountServiceAccountToken: {{ .token | default false }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $full }}
  namespace: {{ $root.Release.Namespace }}
  annotations:
    {{- include "lattice.imageAnnotation" $root | nindent 4 }}
    {{- if .token }}
    checkov.io/skip2: CKV_K8S_38=The trainer submits PyTorchJobs to the API server (a namespace-scoped Role), so it needs its token.
    {{- end }}
    {{- if $root.Values.redis.existingSecret }}
    checkov.io/skip3: CKV_K8S_35=The services take the Redis URL (with its password) only as a setting (LATTICE_REDIS_URL), not from a file.
    {{- end }}
  labels:
    {{- include "lattice.labels" $root | nindent 4 }}
    {{- include "lattice.selector" (dict "root" $root "name" $name) | nindent 4 }}
    app.kubernetes.io/component: {{ $name }}
spec:
  {{- if .stateful }}
  replicas: 1
  strategy:
    type: Recreate
  {{- else }}
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicas }}
  {{- end }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  {{- end }}
  selector:
    matchLabels:
      {{- include "lattice.selector" (dict "root" $root "name" $name) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "lattice.labels" $root | nindent 8 }}
        {{- include "lattice.selector" (dict "root" $root "name" $name) | nindent 8 }}
        app.kubernetes.io/component: {{ $name }}
        lattice.dev/metrics: "true"
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/config.yaml") $root | sha256sum }}
    spec:
      serviceAccountName: {{ $full }}
      automountServiceAccountToken: {{ .token | default false }}
      enableServiceLinks: false
      terminationGracePeriodSeconds: 30
      {{- with $root.Values.image.pullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "lattice.podSecurity" $root | nindent 8 }}
      {{- if not .stateful }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "lattice.selector" (dict "root" $root "name" $name) | nindent 14 }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $name }}
          image: {{ include "lattice.image" (dict "root" $root "name" $name "digest" $v.digest) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          envFrom:
            - configMapRef:
                name: {{ $root.Release.Name }}-common
            - configMapRef:
                name: {{ $full }}
          env:
            {{- include "lattice.redisEnv" $root | nindent 12 }}
            {{- if $root.Values.tls.mtls.enabled }}
            {{- if eq $name "gateway" }}
            # The gateway keeps its public certificate and presents this one upstream.
            - name: LATTICE_GATEWAY_UPSTREAM_CA_FILE
              value: /etc/lattice/mtls/ca.crt
            - name: LATTICE_GATEWAY_UPSTREAM_CERT_FILE
              value: /etc/lattice/mtls/tls.crt
            - name: LATTICE_GATEWAY_UPSTREAM_KEY_FILE
              value: /etc/lattice/mtls/tls.key
            {{- else }}
            # Serve with the suite certificate, require one from callers, call over TLS.
            - name: LATTICE_{{ upper $name }}_TLS_CERT_FILE
              value: /etc/lattice/mtls/tls.crt
            - name: LATTICE_{{ upper $name }}_TLS_KEY_FILE
              value: /etc/lattice/mtls/tls.key
            - name: LATTICE_{{ upper $name }}_TLS_CLIENT_CA_FILE
              value: /etc/lattice/mtls/ca.crt
            - name: LATTICE_{{ upper $name }}_TLS_CA_FILE
              value: /etc/lattice/mtls/ca.crt
            {{- end }}
            {{- end }}
          ports:
            - name: grpc
              containerPort: {{ $v.port }}
            {{- if and (eq $name "gateway") $v.httpPort }}
            - name: http
              containerPort: {{ $v.httpPort }}
            {{- end }}
            - name: metrics
              containerPort: 9464
          startupProbe:
            {{- if $tlsListener }}
            tcpSocket:
              port: {{ $v.port }}
            {{- else }}
            grpc:
              port: {{ $v.port }}
            {{- end }}
            periodSeconds: 5
            failureThreshold: 120
          readinessProbe:
            {{- if $tlsListener }}
            tcpSocket:
              port: {{ $v.port }}
            {{- else }}
            grpc:
              port: {{ $v.port }}
              service: {{ .readiness }}
            {{- end }}
            periodSeconds: 5
            failureThreshold: 2
          livenessProbe:
            {{- if $tlsListener }}
            tcpSocket:
              port: {{ $v.port }}
            {{- else }}
            grpc:
              port: {{ $v.port }}
            {{- end }}
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          resources:
            {{- $resources := deepCopy $v.resources }}
            {{- if and $v.gpu $v.gpu.enabled }}
            {{- $_ := set $resources.requests "nvidia.com/gpu" $v.gpu.count }}
            {{- $_ := set $resources.limits "nvidia.com/gpu" $v.gpu.count }}
            {{- end }}
            {{- toYaml $resources | nindent 12 }}
          securityContext:
            {{- include "lattice.containerSecurity" $root | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /var/lib/lattice
            - name: tmp
              mountPath: /tmp
            {{- if eq $name "trainer" }}
            - name: dshm
              mountPath: /dev/shm
            {{- end }}
            {{- if eq $name "gateway" }}
            - name: jwt
              mountPath: /etc/lattice/jwt
              readOnly: true
            {{- if $root.Values.tls.gateway.secretName }}
            - name: public-tls
              mountPath: /etc/lattice/public-tls
              readOnly: true
            {{- end }}
            {{- end }}
            {{- if $root.Values.tls.mtls.enabled }}
            - name: mtls
              mountPath: /etc/lattice/mtls
              readOnly: true
            {{- end }}
      volumes:
        - name: data
          {{- toYaml .dataVolume | nindent 10 }}
        - name: tmp
          emptyDir:
            sizeLimit: 2Gi
        {{- if eq $name "trainer" }}
        - name: dshm
          emptyDir:
            medium: Memory
            sizeLimit: 2Gi
        {{- end }}
        {{- if eq $name "gateway" }}
        - name: jwt
          secret:
            secretName: {{ $root.Values.jwt.secretName }}
            defaultMode: 0440
            optional: {{ not (empty $root.Values.jwt.jwksUrl) }}
        {{- if $root.Values.tls.gateway.secretName }}
        - name: public-tls
          secret:
            secretName: {{ $root.Values.tls.gateway.secretName }}
            defaultMode: 0440
        {{- end }}
        {{- end }}
        {{- if $root.Values.tls.mtls.enabled }}
        - name: mtls
          secret:
            secretName: {{ $full }}-mtls
            defaultMode: 0440
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $full }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lattice.labels" $root | nindent 4 }}
  {{- with (and (eq $name "gateway") $v.service.annotations) }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ if eq $name "gateway" }}{{ $v.service.type }}{{ else }}ClusterIP{{ end }}
  selector:
    {{- include "lattice.selector" (dict "root" $root "name" $name) | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $v.port }}
      targetPort: grpc
      appProtocol: grpc
    {{- if and (eq $name "gateway") $v.httpPort }}
    - name: http
      port: {{ $v.httpPort }}
      targetPort: http
      appProtocol: http
    {{- end }}
{{- if $v.podDisruptionBudget }}
{{- if $v.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $full }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lattice.labels" $root | nindent 4 }}
spec:
  maxUnavailable: {{ $v.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "lattice.selector" (dict "root" $root "name" $name) | nindent 6 }}
{{- end }}
{{- end }}
{{- if $v.autoscaling }}
{{- if $v.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $full }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lattice.labels" $root | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $full }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $v.autoscaling.targetCPUUtilization }}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 300
{{- end }}
{{- end }}
{{- end -}}
