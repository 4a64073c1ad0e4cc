#!/usr/bin/env bash
# Starts the real services the tests use, installing them when missing:
# MariaDB (the inventory), the Temporal dev server, libvirtd with QEMU (the
# KVM driver's tests; TCG when KVM does not work) and the bootable test
# template, and the IPMI tools (the BareMetal tests start ipmi_sim). Safe to run again: what
# already runs is left alone. Writes the env the tests read to
# $NIMBUS_TEST_STATE/env (default .test-services/env); source it.
#
#   scripts/services.sh          # install + start
#   scripts/services.sh stop     # stop what it started
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state=${NIMBUS_TEST_STATE:-$root/.test-services}
mkdir -p "$state"
temporal_version=v1.5.1
mysql_port=${NIMBUS_TEST_MYSQL_PORT:-3306}
temporal_port=${NIMBUS_TEST_TEMPORAL_PORT:-7233}
temporal_ui_port=${NIMBUS_TEST_TEMPORAL_UI_PORT:-8233}
gobin=$(go env GOPATH)/bin

log() { echo "services: $*" >&2; }

apt_ready=
apt_install() {
	if [ "$(id -u)" != 0 ]; then
		log "need root to install $* (or install them yourself)"; exit 1
	fi
	if [ -z "$apt_ready" ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		apt_ready=1
	fi
	log "installing $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

wait_for() { # seconds, description, command...
	local n=$(( $1 * 5 )) what=$2; shift 2
	for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
	log "$what did not come up; see $state/*.log"; return 1
}

stop() {
	[ -f "$state/temporal.pid" ] && kill "$(cat "$state/temporal.pid")" 2>/dev/null || true
	[ -f "$state/libvirtd.pid" ] && kill "$(cat "$state/libvirtd.pid")" 2>/dev/null || true
	mariadb-admin -uroot --port "$mysql_port" --protocol=tcp shutdown 2>/dev/null || true
	rm -f "$state"/*.pid
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

# MariaDB
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
if ! mariadb-admin -uroot ping >/dev/null 2>&1; then
	install -d -o mysql -g root -m 755 /run/mysqld
	log "starting MariaDB on 127.0.0.1:$mysql_port"
	nohup /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --port="$mysql_port" \
		--socket=/run/mysqld/mysqld.sock --max-connections=1000 \
		--innodb-flush-log-at-trx-commit=2 >"$state/mariadb.log" 2>&1 &
	wait_for 60 MariaDB mariadb-admin -uroot ping
fi
mariadb -uroot -e "CREATE USER IF NOT EXISTS 'nimbus'@'localhost' IDENTIFIED BY 'nimbus';
  CREATE USER IF NOT EXISTS 'nimbus'@'127.0.0.1' IDENTIFIED BY 'nimbus';
  GRANT ALL ON \`nimbus%\`.* TO 'nimbus'@'localhost';
  GRANT ALL ON \`nimbus%\`.* TO 'nimbus'@'127.0.0.1';
  FLUSH PRIVILEGES;"

# Temporal dev server (CLI binary, cached in GOPATH/bin)
temporal=$(command -v temporal || true)
[ -n "$temporal" ] || temporal=$gobin/temporal
if [ ! -x "$temporal" ]; then
	log "installing the Temporal CLI $temporal_version with go install (about 5 minutes the first time)"
	go install "github.com/temporalio/cli/cmd/temporal@$temporal_version"
fi
if ! "$temporal" operator cluster health --address "127.0.0.1:$temporal_port" >/dev/null 2>&1; then
	log "starting Temporal dev server on 127.0.0.1:$temporal_port (UI :$temporal_ui_port)"
	nohup "$temporal" server start-dev --ip 127.0.0.1 --port "$temporal_port" \
		--ui-port "$temporal_ui_port" --log-level warn --db-filename "$state/temporal.db" \
		--sqlite-pragma journal_mode=wal --sqlite-pragma synchronous=off \
		>"$state/temporal.log" 2>&1 &
	echo $! >"$state/temporal.pid"
	wait_for 120 Temporal "$temporal" operator cluster health --address "127.0.0.1:$temporal_port"
fi

# libvirt + QEMU, started by hand (no systemd): virtlogd, then libvirtd.
pkgs=()
[ -x /usr/sbin/libvirtd ] || pkgs+=(libvirt-daemon-system)
[ -f /usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_lxc.so ] || pkgs+=(libvirt-daemon-driver-lxc)
command -v qemu-system-x86_64 >/dev/null || pkgs+=(qemu-system-x86)
command -v qemu-img >/dev/null || pkgs+=(qemu-utils)
command -v ipmi_sim >/dev/null || pkgs+=(openipmi)
command -v ipmitool >/dev/null || pkgs+=(ipmitool)
command -v dnsmasq >/dev/null || pkgs+=(dnsmasq-base)
[ -d /usr/lib/ipxe/qemu ] || pkgs+=(ipxe-qemu)
[ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
if [ -e /dev/kvm ] && getent group kvm >/dev/null; then chgrp kvm /dev/kvm; chmod 660 /dev/kvm; fi # no udev here
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
	mkdir -p /var/run/libvirt
	pgrep -x virtlogd >/dev/null || virtlogd -d
	log "starting libvirtd"
	# On a host with the hybrid cgroup layout (v1 controllers beside a v2
	# hierarchy at /sys/fs/cgroup/unified), libvirt 9.0's LXC driver cannot
	# start containers (virCgroupV2BindMount: "Unable to create directory
	# /sys/fs/cgroup/unified"). libvirtd then runs in a mount namespace of
	# its own without the v2 mount, and uses the v1 controllers alone.
	unshare --mount --propagation slave sh -c '
		if [ "$(stat -f -c %T /sys/fs/cgroup)" = tmpfs ] && mountpoint -q /sys/fs/cgroup/unified; then
			umount -l /sys/fs/cgroup/unified
		fi
		exec libvirtd -d --pid-file "$1"' libvirtd "$state/libvirtd.pid"
	wait_for 60 libvirtd virsh -c qemu:///system version
fi
# The test ISO (isolinux + xorriso) beside the template.
{ command -v xorriso >/dev/null && [ -f /usr/lib/ISOLINUX/isolinux.bin ]; } || apt_install xorriso isolinux
template=$("$root/scripts/build-test-template.sh" "$state/template")
lxc_template=$("$root/scripts/build-test-lxc-template.sh" "$state/template")

cat >"$state/env" <<ENV
export NIMBUS_TEST_MYSQL_DSN='nimbus:nimbus@tcp(127.0.0.1:$mysql_port)/'
export NIMBUS_TEST_MYSQL_ROOT='root@unix(/run/mysqld/mysqld.sock)/'
export NIMBUS_TEST_TEMPORAL=127.0.0.1:$temporal_port
export NIMBUS_TEST_TEMPORAL_UI=http://127.0.0.1:$temporal_ui_port
export NIMBUS_TEMPORAL_BIN=$temporal
export NIMBUS_TEST_LIBVIRT=qemu:///system
export NIMBUS_TEST_TEMPLATE=$template
export NIMBUS_TEST_LXC_TEMPLATE=$lxc_template
ENV
log "ready: MariaDB 127.0.0.1:$mysql_port, Temporal 127.0.0.1:$temporal_port, libvirtd (qemu:///system), template $template; env in $state/env"
