# The cluster VM: two ferrolvm nodes, node1 on vg1 and node2 on vg2, each
# on its own loop device over a sparse 8 GiB file in a tmpfs (which frees
# what is wiped or discarded), each with a 1 GiB thin pool. The nodes reach
# the API server at 10.0.2.100:16443, QEMU's guestfwd to the host's
# loopback; the host reaches this VM only through forwarded ports (the
# agent's, the kubelets'). A kubelet per node (`kubelet-start N`) runs its
# pods, on cgroup v2 with every controller delegated to its cgroup root.
# Runs until the host stops QEMU.
set -eu
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
mkdir -p /disks /run/ferrolvm /var/lib
# kubelet's and containerd's state on a filesystem cAdvisor knows (it
# cannot size the initramfs root, and kubelet will not start without that).
mount -t tmpfs -o size=4g varlib /var/lib
mount -t tmpfs -o size=20g disks /disks
for n in 1 2; do
  truncate -s 8G /disks/vg$n.img
  dev=$(losetup -f --show /disks/vg$n.img)
  echo "$dev" > /run/ferrolvm/vg$n.dev
  pvcreate -q "$dev" >/dev/null
  vgcreate -q vg$n "$dev" >/dev/null
  lvcreate -q -L 1G -T vg$n/pool >/dev/null
done
for n in 1 2; do
  /usr/local/bin/ferrolvm-node-start $n
done
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control
done
tr -d - </proc/sys/kernel/random/uuid >/etc/machine-id
# containerd copies the host's /etc/hosts into every pod sandbox.
printf '127.0.0.1 localhost\n::1 localhost\n' >/etc/hosts
for n in 1 2; do
  mkdir -p /sys/fs/cgroup/node$n
  for c in $(cat /sys/fs/cgroup/node$n/cgroup.controllers); do
    echo "+$c" > /sys/fs/cgroup/node$n/cgroup.subtree_control
  done
  RUNTIME_ONLY=1 /usr/local/bin/kubelet-start $n
done
for n in 1 2; do
  /usr/local/bin/kubelet-start $n
done
vgs
exec /usr/local/bin/vm-agent agent 7000
