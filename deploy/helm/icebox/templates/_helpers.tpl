{{- define "icebox.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "icebox.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "icebox.labels" -}}
app.kubernetes.io/name: {{ include "icebox.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "icebox.selectorLabels" -}}
app.kubernetes.io/name: {{ include "icebox.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* icebox.seconds turns a duration of whole s, m or h ("10s", "2m") into seconds. */}}
{{- define "icebox.seconds" -}}
{{- $d := toString . -}}
{{- if regexMatch "^[0-9]+s$" $d -}}{{ trimSuffix "s" $d | atoi }}
{{- else if regexMatch "^[0-9]+m$" $d -}}{{ mul (trimSuffix "m" $d | atoi) 60 }}
{{- else if regexMatch "^[0-9]+h$" $d -}}{{ mul (trimSuffix "h" $d | atoi) 3600 }}
{{- else -}}{{ fail (printf "config.shutdown: %q is not a whole number of seconds, minutes or hours (10s, 2m, 1h)" $d) }}
{{- end -}}
{{- end -}}

{{/* icebox.port is the port of a listen address such as ":8080" or "0.0.0.0:3478". */}}
{{- define "icebox.port" -}}
{{- splitList ":" (toString .) | last | int -}}
{{- end -}}

{{/* icebox.config is the icebox configuration the pod runs with, as a dict. */}}
{{- define "icebox.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- if eq .Values.mode "loadBalancer" -}}
{{- $_ := set $cfg.turn "relay_port_min" (int .Values.loadBalancer.relayPortMin) -}}
{{- $_ := set $cfg.turn "relay_port_max" (int .Values.loadBalancer.relayPortMax) -}}
{{- end -}}
{{- if .Values.tls.existingSecret -}}
{{- $_ := set $cfg.http "tls_cert" "/etc/icebox/tls/tls.crt" -}}
{{- $_ := set $cfg.http "tls_key" "/etc/icebox/tls/tls.key" -}}
{{- end -}}
{{- if (($cfg.acme).enabled) -}}
{{- $_ := set $cfg.acme "storage" "/var/lib/icebox/acme" -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* icebox.lowPorts is "true" when icebox listens on a port below 1024 (the edge on 443, say). */}}
{{- define "icebox.lowPorts" -}}
{{- $cfg := .Values.config -}}
{{- $low := false -}}
{{- range $addr := list $cfg.http.listen $cfg.turn.udp_listen $cfg.turn.tcp_listen $cfg.turn.tls_listen (($cfg.edge).listen) (($cfg.edge).udp_listen) (($cfg.acme).http_listen) -}}
{{- if and $addr (lt (include "icebox.port" $addr | int) 1024) -}}{{- $low = true -}}{{- end -}}
{{- end -}}
{{- $low -}}
{{- end -}}

{{/* icebox.validate fails the render on values that cannot work. */}}
{{- define "icebox.validate" -}}
{{- if not (has .Values.mode (list "hostNetwork" "loadBalancer")) -}}
{{- fail (printf "mode: %q is not hostNetwork or loadBalancer" .Values.mode) -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.redis.url) (not .Values.redis.existingSecret) -}}
{{- fail (printf "replicaCount %d needs Redis for shared rooms: set redis.url (or redis.existingSecret with key redis-url); one replica needs none" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if eq .Values.mode "loadBalancer" -}}
{{- $n := add1 (sub (int .Values.loadBalancer.relayPortMax) (int .Values.loadBalancer.relayPortMin)) -}}
{{- if or (lt (int $n) 1) (gt (int $n) 1000) -}}
{{- fail (printf "loadBalancer.relayPortMin..relayPortMax: %d ports; a LoadBalancer Service lists each one, keep it between 1 and 1000" (int $n)) -}}
{{- end -}}
{{- end -}}
{{- $mode := toString ((.Values.config.auth).mode) -}}
{{- if and (eq $mode "none") (not .Values.auth.allowOpen) -}}
{{- fail "config.auth.mode none: anyone could take TURN credentials and use the relay. Keep jwt (tokens your app server mints; the chart generates the key) or token (auth.tokens), or set auth.allowOpen=true for a lab" -}}
{{- end -}}
{{- if and (eq $mode "token") (not .Values.auth.tokens) -}}
{{- fail "config.auth.mode token needs auth.tokens: the API keys that may get credentials and join" -}}
{{- end -}}
{{- $acme := ((.Values.config.acme).enabled) -}}
{{- if and .Values.config.turn.tls_listen (not .Values.tls.existingSecret) (not .Values.config.http.tls_cert) (not $acme) -}}
{{- fail "config.turn.tls_listen needs a certificate: set tls.existingSecret (or config.acme.enabled)" -}}
{{- end -}}
{{- if and ((.Values.config.edge).listen) (not .Values.tls.existingSecret) (not .Values.config.http.tls_cert) (not $acme) -}}
{{- fail "config.edge.listen needs a certificate: set tls.existingSecret, or config.acme.enabled (hostNetwork mode)" -}}
{{- end -}}
{{- if and $acme (eq .Values.mode "loadBalancer") -}}
{{- fail "config.acme.enabled with mode loadBalancer: the CA's validation would reach a pod only once it is ready, which it is not before it has a certificate; use tls.existingSecret (cert-manager) there, or mode hostNetwork" -}}
{{- end -}}
{{- if and $acme (or (not .Values.config.public_host) (regexMatch "^[0-9.]+$|:" (toString .Values.config.public_host))) -}}
{{- fail "config.acme.enabled needs config.public_host: the DNS name of the nodes, which the certificate is for" -}}
{{- end -}}
{{- end -}}
