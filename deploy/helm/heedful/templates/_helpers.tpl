{{/* The chart's name. */}}
{{- define "heedful.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, the prefix of every object (63 characters at most, less room for a suffix). */}}
{{- define "heedful.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "heedful.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every bot process shares (the Service selects on these). */}}
{{- define "heedful.selectorLabels" -}}
app.kubernetes.io/name: {{ include "heedful.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "heedful.labels" -}}
helm.sh/chart: {{ include "heedful.chart" . }}
{{ include "heedful.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "heedful.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
One bot process: a Deployment of one pod running `heedful run ARGS`.
Call with (dict "root" $ "process" NAME "args" (list ...) "env" (list ...)).
Recreate: never two pods of one process at once (a Telegram poller or a Discord shard twice).
*/}}
{{- define "heedful.process" -}}
{{- $root := .root }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "heedful.fullname" $root }}-{{ .process }}
  labels:
    {{- include "heedful.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .process }}
spec:
  replicas: 1
  strategy:
    type: Recreate
  selector:
    matchLabels:
      {{- include "heedful.selectorLabels" $root | nindent 6 }}
      app.kubernetes.io/component: {{ .process }}
  template:
    metadata:
      labels:
        {{- include "heedful.selectorLabels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .process }}
      annotations:
        checksum/config: {{ $root.Values.config | sha256sum }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      automountServiceAccountToken: false
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: 60
      containers:
        - name: heedful
          image: {{ include "heedful.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          env:
            {{- include "heedful.env" $root | nindent 12 }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: http
              containerPort: 8321
              protocol: TCP
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 5
            failureThreshold: 60
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 30
            timeoutSeconds: 10
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 10
            timeoutSeconds: 5
          resources:
            {{- toYaml $root.Values.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /data
            {{- if $root.Values.config }}
            - name: config
              mountPath: /etc/heedful
              readOnly: true
            {{- end }}
      volumes:
        # Caches only: what must survive is in PostgreSQL.
        - name: data
          emptyDir: {}
        {{- if $root.Values.config }}
        - name: config
          configMap:
            name: {{ include "heedful.fullname" $root }}-config
        {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* The environment every process shares. */}}
{{- define "heedful.env" -}}
- name: HEEDFUL_STORE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "store.urlSecret.name: the Secret with the PostgreSQL URL" .Values.store.urlSecret.name }}
      key: {{ .Values.store.urlSecret.key }}
- name: HEEDFUL_MODEL_BACKEND
  value: {{ .Values.model.backend | quote }}
{{- if eq .Values.model.backend "vllm" }}
- name: HEEDFUL_MODEL_LORA_LOADING
  value: {{ .Values.model.loraLoading | quote }}
{{- end }}
- name: HEEDFUL_MODEL_BASE_URL
  value: {{ required "model.baseUrl: the model server's API root" .Values.model.baseUrl | quote }}
- name: HEEDFUL_MODEL_ID
  value: {{ .Values.model.id | quote }}
{{- if .Values.model.apiKeySecret.name }}
- name: HEEDFUL_MODEL_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.model.apiKeySecret.name }}
      key: {{ .Values.model.apiKeySecret.key }}
{{- end }}
- name: HEEDFUL_HTTP_HOST
  value: "0.0.0.0"
- name: HEEDFUL_HTTP_PORT
  value: "8321"
- name: HEEDFUL_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: HEEDFUL_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- if .Values.config }}
- name: HEEDFUL_CONFIG
  value: /etc/heedful/heedful.toml
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
