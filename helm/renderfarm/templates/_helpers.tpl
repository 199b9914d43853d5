{{/* Names, labels, images and shared pod pieces. */}}

{{- define "renderfarm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "renderfarm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "renderfarm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object; pass (dict "root" $ "component" "api"). */}}
{{- define "renderfarm.labels" -}}
helm.sh/chart: {{ include "renderfarm.chart" .root }}
{{ include "renderfarm.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: renderfarm
{{- end -}}

{{- define "renderfarm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "renderfarm.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Pods that may open a connection to Redis (the NetworkPolicy admits only these). */}}
{{- define "renderfarm.redisClientLabel" -}}
renderfarm.io/redis-client: "true"
{{- end -}}

{{- define "renderfarm.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}

{{- define "renderfarm.imagePullSecrets" -}}
{{- with .Values.images.pullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{- define "renderfarm.serviceAccountName" -}}
{{- printf "%s-%s" (include "renderfarm.fullname" .root) .component -}}
{{- end -}}

{{/* Redis: where it is and which Secret holds its password. */}}
{{- define "renderfarm.redisHost" -}}
{{- printf "%s-redis" (include "renderfarm.fullname" .) -}}
{{- end -}}

{{- define "renderfarm.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s:%d/0" (include "renderfarm.redisHost" .) (int .Values.redis.port) -}}
{{- else -}}
{{- required "redis.external.url is required when redis.enabled=false" .Values.redis.external.url -}}
{{- end -}}
{{- end -}}

{{- define "renderfarm.redisSecretName" -}}
{{- if .Values.redis.enabled -}}
{{- .Values.redis.auth.existingSecret | default (printf "%s-redis-auth" (include "renderfarm.fullname" .)) -}}
{{- else -}}
{{- .Values.redis.external.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "renderfarm.redisSecretKey" -}}
{{- if .Values.redis.enabled -}}
{{- .Values.redis.auth.existingSecretPasswordKey -}}
{{- else -}}
{{- .Values.redis.external.existingSecretPasswordKey -}}
{{- end -}}
{{- end -}}

{{- define "renderfarm.mediaClaimName" -}}
{{- .Values.media.persistence.existingClaim | default (printf "%s-media" (include "renderfarm.fullname" .)) -}}
{{- end -}}

{{- define "renderfarm.apiKeysSecretName" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "renderfarm.fullname" .)) -}}
{{- end -}}

{{/* Environment every farm process shares: Redis, data paths, logging. */}}
{{- define "renderfarm.commonEnv" -}}
- name: RF_REDIS_URL
  value: {{ include "renderfarm.redisUrl" . | quote }}
{{- $secret := include "renderfarm.redisSecretName" . }}
{{- if $secret }}
- name: RF_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "renderfarm.redisSecretKey" . }}
{{- end }}
- name: RF_DATA_DIR
  value: {{ .Values.media.mountPath | quote }}
- name: RF_ALLOWED_INPUT_ROOTS
  value: {{ join "," (.Values.media.allowedInputRoots | default (list (printf "%s/inputs" .Values.media.mountPath))) | quote }}
- name: RF_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /cache
{{- if .Values.webhooks.existingSecret }}
- name: RF_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.webhooks.existingSecret }}
      key: {{ .Values.webhooks.existingSecretKey }}
{{- end }}
{{- if eq .Values.storage.backend "s3" }}
{{- $s3 := .Values.storage.s3 }}
- name: RF_STORAGE_BACKEND
  value: s3
- name: RF_S3_ENDPOINT
  value: {{ $s3.endpoint | quote }}
- name: RF_S3_PUBLIC_ENDPOINT
  value: {{ $s3.publicEndpoint | quote }}
- name: RF_S3_REGION
  value: {{ $s3.region | quote }}
- name: RF_S3_BUCKET
  value: {{ required "storage.s3.bucket is required with storage.backend=s3" $s3.bucket | quote }}
- name: RF_S3_PREFIX
  value: {{ $s3.prefix | quote }}
- name: RF_S3_PATH_STYLE
  value: {{ $s3.pathStyle | quote }}
- name: RF_S3_PRESIGN_TTL_S
  value: {{ $s3.presignTtlSeconds | quote }}
- name: RF_S3_ALLOWED_INPUT_BUCKETS
  value: {{ join "," $s3.allowedInputBuckets | quote }}
- name: RF_S3_TENANT_INPUT_BUCKETS
  value: {{ $s3.tenantInputBuckets | toJson | quote }}
{{- if $s3.existingSecret }}
- name: RF_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $s3.existingSecret }}
      key: {{ $s3.accessKeyIdKey }}
- name: RF_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s3.existingSecret }}
      key: {{ $s3.secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "renderfarm.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "renderfarm.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end -}}

{{/* Writable scratch on a read-only root filesystem. */}}
{{- define "renderfarm.scratchVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /cache
{{- end -}}

{{- define "renderfarm.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratch.tmpSizeLimit }}
- name: cache
  emptyDir:
    sizeLimit: {{ .Values.scratch.cacheSizeLimit }}
{{- end -}}

{{- define "renderfarm.mediaVolume" -}}
- name: media
{{- if .Values.media.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "renderfarm.mediaClaimName" . }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{/*
The worker pools: the registry's list (files/pools.json, generated from
renderfarm.core), each merged with workers.defaults, workers.gpu for GPU pools,
and workers.pools.<name>. Returns JSON: {"pools": [{name, queues, gpu, cfg}, ...]}.
*/}}
{{- define "renderfarm.pools" -}}
{{- $catalog := .Files.Get "files/pools.json" | fromJsonArray -}}
{{- $known := list -}}
{{- range $catalog }}{{ $known = append $known .name }}{{ end -}}
{{- range $name, $_ := .Values.workers.pools -}}
{{- if not (has $name $known) -}}
{{- fail (printf "workers.pools.%s: unknown pool; the pools are %s" $name (join ", " $known)) -}}
{{- end -}}
{{- end -}}
{{- $out := list -}}
{{- range $catalog -}}
{{- $cfg := $.Values.workers.defaults -}}
{{- if .gpu -}}
{{- $cfg = include "renderfarm.overlay" (dict "base" $cfg "over" $.Values.workers.gpu) | fromJson -}}
{{- end -}}
{{- $cfg = include "renderfarm.overlay" (dict "base" $cfg "over" (index $.Values.workers.pools .name | default dict)) | fromJson -}}
{{- $out = append $out (dict "name" .name "queues" .queues "gpu" .gpu "kinds" .kinds "cfg" $cfg) -}}
{{- end -}}
{{- dict "pools" $out | toJson -}}
{{- end -}}

{{/*
.over laid onto .base, maps merged key by key, as JSON. (sprig's mergeOverwrite
skips zero values, so minReplicas: 0 or enabled: false would be lost.)
*/}}
{{- define "renderfarm.overlay" -}}
{{- $out := deepCopy .base -}}
{{- range $key, $value := .over -}}
{{- if and (kindIs "map" $value) (kindIs "map" (index $out $key)) -}}
{{- $_ := set $out $key (include "renderfarm.overlay" (dict "base" (index $out $key) "over" $value) | fromJson) -}}
{{- else -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
