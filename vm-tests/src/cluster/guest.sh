# The cluster VM: two ferrolvm nodes, node1 on vg1 and node2 on vg2, each
# on its own loop device over a sparse 8 GiB file in a tmpfs (which frees
# what is wiped or discarded), each with a 1 GiB thin pool. The nodes reach
# the API server at 10.0.2.100:16443, QEMU's guestfwd to the host's
# loopback; the host reaches this VM only through the agent's forwarded
# port. Runs until the host stops QEMU.
set -eu
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
mkdir -p /disks /run/ferrolvm
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
vgs
exec /usr/local/bin/vm-agent agent 7000
