#!/bin/sh
# Installs icebox as a systemd service on a VPS.
#
#   sudo deploy/systemd/install.sh --binary ./bin/icebox --public-host turn.example.com --public-ip 203.0.113.10
#
# It installs the binary to /usr/local/bin/icebox, creates the system user icebox and
# /etc/icebox, writes /etc/icebox/icebox.yaml with a fresh 32-byte TURN secret (an existing
# configuration is never overwritten), installs icebox.service, and enables and starts it.
#
# DESTDIR=/some/root installs the files under that root only (packaging, tests): no user is
# created and systemctl is not called.
set -eu

usage() {
	echo "usage: $0 [--binary PATH] [--public-host HOST] [--public-ip IPV4] [--no-start]" >&2
	exit 2
}

here=$(cd "$(dirname "$0")" && pwd)
binary="" public_host="" public_ip="" start=1
while [ $# -gt 0 ]; do
	case "$1" in
	--binary) [ $# -ge 2 ] || usage; binary=$2; shift 2 ;;
	--public-host) [ $# -ge 2 ] || usage; public_host=$2; shift 2 ;;
	--public-ip) [ $# -ge 2 ] || usage; public_ip=$2; shift 2 ;;
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
case "$public_host" in *[!A-Za-z0-9.:_-]*) echo "$0: --public-host $public_host is not a host name or address" >&2; exit 2 ;; esac
case "$public_ip" in *[!0-9.]*) echo "$0: --public-ip $public_ip is not an IPv4 address" >&2; exit 2 ;; esac

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
else
	secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
	if [ ${#secret} -ne 64 ]; then
		echo "$0: could not read 32 random bytes from /dev/urandom" >&2
		exit 1
	fi
	umask 077
	{
		echo "# icebox configuration. Every key with its default and what it does:"
		echo "# configs/icebox.yaml in the icebox sources, or: icebox config print"
		[ -n "$public_host" ] && echo "public_host: \"$public_host\""
		[ -n "$public_ip" ] && echo "public_ip: \"$public_ip\""
		echo "credentials:"
		echo "  # TURN REST shared secret (coturn's static-auth-secret). To rotate: put the new"
		echo "  # one first, restart, and remove the old one once its credentials expired."
		echo "  secrets: [\"$secret\"]"
		echo "log:"
		echo "  format: json"
	} > "$config.new"
	mv "$config.new" "$config"
	chmod 0640 "$config"
	[ -z "$root" ] && chgrp icebox "$config"
	echo "wrote $config with a new TURN secret"
fi

install -m 0644 "$here/icebox.service" "$root/etc/systemd/system/icebox.service"

if [ -z "$root" ]; then
	systemctl daemon-reload
	if [ "$start" = 1 ]; then
		systemctl enable --now icebox
		echo "icebox is running: systemctl status icebox; journalctl -u icebox"
	else
		systemctl enable icebox
	fi
fi
