{{/* The driver's name, as it registers with kubelet and the sidecars. */}}
{{- define "ferrolvm.driver" -}}ferrolvm.io{{- end -}}

{{- define "ferrolvm.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "ferrolvm.labels" -}}
app.kubernetes.io/name: ferrolvm
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "ferrolvm.plugindir" -}}{{ .Values.node.kubeletDir }}/plugins/ferrolvm.io{{- end -}}

{{/* A container's env with the pod's name, namespace, IP and node. */}}
{{- define "ferrolvm.podenv" -}}
- name: POD_NAME
  valueFrom: { fieldRef: { fieldPath: metadata.name } }
- name: POD_NAMESPACE
  valueFrom: { fieldRef: { fieldPath: metadata.namespace } }
- name: POD_IP
  valueFrom: { fieldRef: { fieldPath: status.podIP } }
- name: NODE_NAME
  valueFrom: { fieldRef: { fieldPath: spec.nodeName } }
{{- end -}}

{{/* Least privilege for containers that need no root. */}}
{{- define "ferrolvm.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: { drop: [ALL] }
{{- end -}}
