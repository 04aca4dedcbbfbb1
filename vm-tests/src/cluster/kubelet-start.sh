#!/usr/bin/sh
# kubelet-start N: node N's container runtime and kubelet (again, after a
# kill). Two kubelets share this VM, so each has its own of everything a
# kubelet and its runtime own: containerd root, state and socket; kubelet
# root dir (/var/lib/kubelet-nodeN, where ferrolvm node N publishes), cgroup
# root (/nodeN), CNI network (10.88.N.0/24 on bridge cniN) and ports (kubelet
# 2125(N-1) on 10.0.2.15, forwarded to the host's loopback; healthz on the
# guest's loopback). Logs: /run/ferrolvm/containerd-nodeN.log and
# /run/ferrolvm/kubelet-nodeN.log.
set -eu
n=${1:?usage: kubelet-start N}
node=node$n
root=/var/lib/kubelet-$node
crun=/run/containerd-$node
sock=$crun/containerd.sock
port=$((21250 + n - 1))
healthz=$((21248 - n + 1))

if ! [ -S "$sock" ] || ! ctr -a "$sock" version >/dev/null 2>&1; then
  mkdir -p /etc/containerd /etc/cni/$node "$crun"
  cat >/etc/containerd/$node.toml <<TOML
version = 3
root = "/var/lib/containerd-$node"
state = "$crun"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images']
  # The root is the initramfs (a tmpfs): no overlayfs needed, and images
  # are tiny, so native copies are cheap.
  snapshotter = "native"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "localhost/ferrolvm/pause:1"
[plugins.'io.containerd.cri.v1.runtime']
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      # pivot_root(2) is refused on the initramfs root.
      NoPivotRoot = true
      BinaryName = "/usr/sbin/runc"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "/etc/cni/$node"
[plugins.'io.containerd.transfer.v1.local']
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = "linux/amd64"
    snapshotter = "native"
TOML
  cat >/etc/cni/$node/10-$node.conflist <<JSON
{"cniVersion":"1.0.0","name":"$node","plugins":[{"type":"bridge","bridge":"cni$n","isGateway":true,"ipMasq":false,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.$n.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}
JSON
  setsid containerd --config /etc/containerd/$node.toml \
    >>/run/ferrolvm/containerd-$node.log 2>&1 </dev/null &
  i=0
  until ctr -a "$sock" version >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 300 ] || { echo "kubelet-start: containerd for $node did not start" >&2; exit 1; }
    sleep 0.2
  done
  for image in busybox pause; do
    ctr -a "$sock" -n k8s.io images import --platform linux/amd64 --snapshotter native \
      /etc/ferrolvm/images/$image.tar >/dev/null
  done
fi

# RUNTIME_ONLY=1: the runtime alone. guest.sh starts both runtimes before
# either kubelet: a kubelet's cAdvisor reads every mount once at start, and
# fails on the other runtime's passing image-import mounts.
[ "${RUNTIME_ONLY:-}" != 1 ] || exit 0

mkdir -p "$root" /etc/kubelet
cat >/etc/kubelet/$node.yaml <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$sock
cgroupDriver: cgroupfs
cgroupRoot: /$node
address: 10.0.2.15
port: $port
readOnlyPort: 0
tlsCertFile: /etc/kubelet/$node-serving.crt
tlsPrivateKeyFile: /etc/kubelet/$node-serving.key
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: /etc/ferrolvm/ca.crt
authorization:
  mode: Webhook
failSwapOn: false
resolvConf: ""
# The VM's disks are a tmpfs the tests fill on purpose: no evictions, no image GC.
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "0%"
  imagefs.available: "0%"
  nodefs.inodesFree: "0%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Fresh volume stats and health for the tests (default 1m).
volumeStatsAggPeriod: 5s
# NodeGetVolumeHealth into the pods' status.volumeHealth (alpha in 1.37).
featureGates:
  CSIVolumeHealth: true
fileCheckFrequency: 5s
YAML
setsid kubelet --config /etc/kubelet/$node.yaml \
  --kubeconfig /etc/kubelet/$node.kubeconfig --root-dir "$root" \
  --hostname-override $node --node-ip 10.0.2.15 --v=2 \
  >>/run/ferrolvm/kubelet-$node.log 2>&1 </dev/null &
echo $! >/run/ferrolvm/kubelet-$node.pid
