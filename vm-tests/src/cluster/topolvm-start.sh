#!/usr/bin/sh
# topolvm-start N: the race's peer on node N (issue 12), beside ferrolvm's:
# TopoLVM's own node (`hypertopolvm topolvm-node --embed-lvmd`, v0.41.0) on
# a fresh VG tvgN made like ferrolvm's vgN (8 GiB sparse loop file, 1 GiB
# thin pool), and kubelet's plugin registration for it (`ferrolvm
# register-plugin`, the stand-in for node-driver-registrar).
#
# The lvm commands lvmd runs see only tvgN's device (their own
# LVM_SYSTEM_DIR with a global_filter), as ferrolvm node N sees only vgN's
# (--devices): each node scans what a one-VG host would. Logs:
# /run/topolvm/nodeN.log and /run/topolvm/register-nodeN.log.
set -eu
n=${1:?usage: topolvm-start N}
mkdir -p /run/topolvm /etc/topolvm /etc/lvm-topolvm-node$n
if ! [ -e /run/topolvm/tvg$n.dev ]; then
  truncate -s 8G /disks/tvg$n.img
  dev=$(losetup -f --show /disks/tvg$n.img)
  pvcreate -q "$dev" >/dev/null
  vgcreate -q tvg$n "$dev" >/dev/null
  lvcreate -q -L 1G -T tvg$n/pool >/dev/null
  echo "$dev" >/run/topolvm/tvg$n.dev
fi
dev=$(cat /run/topolvm/tvg$n.dev)
cat >/etc/lvm-topolvm-node$n/lvm.conf <<CONF
activation {
	udev_sync = 0
	udev_rules = 0
	monitoring = 0
}
devices {
	obtain_device_list_from_udev = 0
	global_filter = [ "a|^$dev\$|", "r|.*|" ]
}
CONF
# lvm itself, not TopoLVM's default prefix (nsenter into PID 1's
# namespaces, for a containerised node): this node runs on the host.
cat >/etc/topolvm/node$n.yaml <<YAML
lvm-command-prefix: ["$(command -v lvm)"]
device-classes:
  - name: thick
    volume-group: tvg$n
    default: true
    spare-gb: 0
  - name: thin
    volume-group: tvg$n
    type: thin
    thin-pool:
      name: pool
      overprovision-ratio: 10
YAML
sock=/run/topolvm/node$n.sock
LVM_SYSTEM_DIR=/etc/lvm-topolvm-node$n KUBECONFIG=/etc/topolvm/kubeconfig \
  setsid /usr/local/bin/hypertopolvm topolvm-node --embed-lvmd \
  --config /etc/topolvm/node$n.yaml --csi-socket "$sock" --nodename node$n \
  --metrics-bind-address 127.0.0.1:809$n \
  >>/run/topolvm/node$n.log 2>&1 </dev/null &
echo $! >/run/topolvm/node$n.pid
i=0
until [ -S "$sock" ]; do
  i=$((i + 1))
  [ $i -lt 600 ] || { echo "topolvm-start: node$n made no CSI socket" >&2; tail -n 20 /run/topolvm/node$n.log >&2; exit 1; }
  sleep 0.1
done
setsid /usr/local/bin/ferrolvm register-plugin --driver-name topolvm.io \
  --csi-path "$sock" --kubelet-dir /var/lib/kubelet-node$n \
  >>/run/topolvm/register-node$n.log 2>&1 </dev/null &
echo $! >/run/topolvm/register-node$n.pid
