#!/bin/sh
# Installs icebox as a systemd service on a VPS.
#
#   sudo deploy/systemd/install.sh --public-host turn.example.com --acme-email ops@example.com
#
# takes a fresh VPS whose DNS name points at it to HTTPS plus TURN on port 443: icebox gets its
# certificate from Let's Encrypt itself (ACME), serves the page, signaling and TURN over TLS on
# TCP 443, TURN on UDP 443 (and 3478), HTTP-01 and a redirect to https on port 80.
# Without --acme-email it installs the plain setup (HTTP on 8080, TURN on 3478):
#
#   sudo deploy/systemd/install.sh --binary ./bin/icebox --public-host turn.example.com --public-ip 203.0.113.10
#
# It installs the binary to /usr/local/bin/icebox, creates the system user icebox and
# /etc/icebox, writes /etc/icebox/icebox.yaml with a fresh 32-byte TURN secret and a fresh
# 32-byte JWT key (auth.mode jwt: only holders of a token your app server mints get TURN
# credentials and join rooms; --auth token writes an API key instead), checked by icebox itself
# (an existing configuration is never overwritten), installs icebox.service, and enables and
# starts it.
# ACME's account and certificates live in /var/lib/icebox (the unit's StateDirectory).
#
# DESTDIR=/some/root installs the files under that root only (packaging, tests): no user is
# created and systemctl is not called.
set -eu

usage() {
	echo "usage: $0 [--binary PATH] [--public-host HOST] [--acme-email EMAIL [--acme-ca URL]] [--public-ip IPV4] [--auth jwt|token] [--no-start]" >&2
	exit 2
}

here=$(cd "$(dirname "$0")" && pwd)
binary="" public_host="" public_ip="" acme_email="" acme_ca="" auth=jwt start=1
while [ $# -gt 0 ]; do
	case "$1" in
	--binary) [ $# -ge 2 ] || usage; binary=$2; shift 2 ;;
	--public-host) [ $# -ge 2 ] || usage; public_host=$2; shift 2 ;;
	--public-ip) [ $# -ge 2 ] || usage; public_ip=$2; shift 2 ;;
	--acme-email) [ $# -ge 2 ] || usage; acme_email=$2; shift 2 ;;
	--acme-ca) [ $# -ge 2 ] || usage; acme_ca=$2; shift 2 ;;
	--auth) [ $# -ge 2 ] || usage; auth=$2; shift 2 ;;
	--no-start) start=0; shift ;;
	-h|--help) usage ;;
	*) echo "$0: unknown argument $1" >&2; usage ;;
	esac
done

root=${DESTDIR:-}
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
	echo "$0: run as root (or set DESTDIR to install into a directory)" >&2
	exit 1
fi
if [ -z "$binary" ]; then
	for candidate in "$here/../../bin/icebox" ./icebox "$(command -v icebox 2>/dev/null || true)"; do
		if [ -n "$candidate" ] && [ -x "$candidate" ]; then binary=$candidate; break; fi
	done
fi
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
	echo "$0: no icebox binary: build one (make build) or pass --binary PATH" >&2
	exit 1
fi
# is_ipv4 reports whether $1 is a dotted IPv4 address: four numbers 0-255.
is_ipv4() {
	case "$1" in *[!0-9.]*|*..*|.*|*.) return 1 ;; esac
	old_ifs=$IFS; IFS=.
	# shellcheck disable=SC2086 # split on the dots
	set -- $1
	IFS=$old_ifs
	[ $# -eq 4 ] || return 1
	for octet in "$@"; do
		case "$octet" in ""|0?*) [ "$octet" = 0 ] || return 1 ;; esac
		[ "${#octet}" -le 3 ] && [ "$octet" -le 255 ] || return 1
	done
}
# is_hostname reports whether $1 is a DNS name: dot-separated labels of letters, digits and
# inner hyphens, 1-63 characters each, 253 in all.
is_hostname() {
	[ "${#1}" -le 253 ] || return 1
	case "$1" in ""|*[!A-Za-z0-9.-]*|.*|*.|*..*) return 1 ;; esac
	old_ifs=$IFS; IFS=.
	# shellcheck disable=SC2086
	set -- $1
	IFS=$old_ifs
	for label in "$@"; do
		case "$label" in -*|*-) return 1 ;; esac
		[ "${#label}" -le 63 ] || return 1
	done
}
if [ -n "$public_host" ] && ! is_hostname "$public_host" && ! is_ipv4 "$public_host"; then
	echo "$0: --public-host $public_host is not a DNS name or an IPv4 address" >&2
	exit 2
fi
if [ -n "$public_ip" ] && ! is_ipv4 "$public_ip"; then
	echo "$0: --public-ip $public_ip is not an IPv4 address (four numbers 0-255, e.g. 203.0.113.10)" >&2
	exit 2
fi
case "$auth" in
jwt|token) ;;
*) echo "$0: --auth $auth: jwt (tokens your app server mints) or token (a fixed API key); a public server is not left open" >&2; exit 2 ;;
esac
if [ -n "$acme_email" ]; then
	if [ -z "$public_host" ]; then
		echo "$0: --acme-email needs --public-host: the DNS name of this machine, which the certificate is for" >&2
		exit 2
	fi
	if is_ipv4 "$public_host"; then
		echo "$0: --public-host $public_host is an IP address: a certificate from Let's Encrypt needs a DNS name pointing here" >&2
		exit 2
	fi
	case "$acme_email" in
	*[!A-Za-z0-9.@+_-]*|*@*@*|@*|*@) echo "$0: --acme-email $acme_email is not an email address" >&2; exit 2 ;;
	*@*.*) ;;
	*) echo "$0: --acme-email $acme_email is not an email address" >&2; exit 2 ;;
	esac
	case "$acme_email$acme_ca" in *[\"\ ]*) echo "$0: --acme-email and --acme-ca take no quotes or spaces" >&2; exit 2 ;; esac
elif [ -n "$acme_ca" ]; then
	echo "$0: --acme-ca needs --acme-email" >&2
	exit 2
fi

install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system"
install -m 0755 "$binary" "$root/usr/local/bin/icebox.new"
mv -f "$root/usr/local/bin/icebox.new" "$root/usr/local/bin/icebox"

if [ -z "$root" ] && ! id icebox >/dev/null 2>&1; then
	useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin icebox
fi
install -d -m 0750 "$root/etc/icebox"
[ -z "$root" ] && chgrp icebox /etc/icebox

config="$root/etc/icebox/icebox.yaml"
if [ -e "$config" ]; then
	echo "keeping the existing $config"
	if [ -n "$acme_email" ] && ! grep -q '^acme:' "$config"; then
		echo "  it has no acme section: for HTTPS and TURN on 443, add acme (enabled, email, http_listen \":80\")"
		echo "  and edge (listen \":443\", udp_listen \":443\") to it as README's VPS section shows, then: systemctl restart icebox"
	fi
else
	secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
	authkey=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
	if [ ${#secret} -ne 64 ] || [ ${#authkey} -ne 64 ]; then
		echo "$0: could not read 32 random bytes from /dev/urandom" >&2
		exit 1
	fi
	umask 077
	{
		echo "# icebox configuration. Every key with its default and what it does:"
		echo "# configs/icebox.yaml in the icebox sources, or: icebox config print"
		[ -n "$public_host" ] && echo "public_host: \"$public_host\""
		[ -n "$public_ip" ] && echo "public_ip: \"$public_ip\""
		if [ -n "$acme_email" ]; then
			echo "http:"
			echo "  # Health, readiness and metrics on this machine; browsers and apps use port 443."
			echo "  listen: \"127.0.0.1:8080\""
			echo "acme:"
			echo "  # The certificate for public_host, from Let's Encrypt, renewed by icebox."
			echo "  enabled: true"
			echo "  email: \"$acme_email\""
			[ -n "$acme_ca" ] && echo "  ca: \"$acme_ca\""
			echo "  # HTTP-01 challenges, and a redirect to https for everything else."
			echo "  http_listen: \":80\""
			echo "edge:"
			echo "  # HTTPS, WebSocket signaling, TURN over TLS and TCP: one port, the one strict networks allow."
			echo "  listen: \":443\""
			echo "  # TURN over UDP on 443 too."
			echo "  udp_listen: \":443\""
		fi
		echo "credentials:"
		echo "  # TURN REST shared secret (coturn's static-auth-secret). To rotate: put the new"
		echo "  # one first, restart, and remove the old one once its credentials expired."
		echo "  secrets: [\"$secret\"]"
		echo "auth:"
		if [ "$auth" = jwt ]; then
			echo "  # /ice-config, /turn-credentials and /ws take a JWT (Authorization: Bearer, or ?token=)"
			echo "  # that your app server signs with this key for its users: README, \"Tokens for your users\"."
			echo "  # A token to try: icebox token --config /etc/icebox/icebox.yaml --sub you"
			echo "  mode: jwt"
			echo "  jwt_secret: \"$authkey\""
		else
			echo "  # /ice-config, /turn-credentials and /ws take this API key (Authorization: Bearer, or ?token=)."
			echo "  mode: token"
			echo "  tokens: [\"$authkey\"]"
		fi
		echo "log:"
		echo "  format: json"
	} > "$config.new"
	# icebox checks what it will run with: a value it would refuse stops the install here, not
	# in a restart loop under systemd.
	if ! problems=$("$binary" config print --config "$config.new" 2>&1 >/dev/null); then
		rm -f "$config.new"
		echo "$0: icebox refuses the configuration these arguments make:" >&2
		echo "$problems" >&2
		exit 2
	fi
	mv "$config.new" "$config"
	chmod 0640 "$config"
	[ -z "$root" ] && chgrp icebox "$config"
	echo "wrote $config with a new TURN secret and a new $auth key (auth.mode $auth)"
fi

install -m 0644 "$here/icebox.service" "$root/etc/systemd/system/icebox.service"

if [ -z "$root" ]; then
	systemctl daemon-reload
	if [ "$start" = 1 ]; then
		systemctl enable --now icebox
		echo "icebox is running: systemctl status icebox; journalctl -u icebox"
		if [ -n "$acme_email" ]; then
			echo "it is getting a certificate for $public_host (journalctl -u icebox shows \"certificate in service\", or why not);"
			echo "then open https://$public_host/ and check it from another machine: icebox check https://$public_host"
			echo "firewall: open TCP 80 and 443, UDP 443, UDP and TCP 3478, and UDP 49152-65535 (the relay ports)"
		fi
		if grep -q '^  mode: jwt' "$config"; then
			echo "credentials and rooms need a token your app server mints (README, \"Tokens for your users\"); to try the demo:"
			echo "  https://${public_host:-HOST}/?token=\$(icebox token --config /etc/icebox/icebox.yaml --sub you)"
		fi
	else
		systemctl enable icebox
	fi
fi
