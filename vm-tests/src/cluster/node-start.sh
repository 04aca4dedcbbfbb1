#!/usr/bin/sh
# ferrolvm-node-start N: starts node N's ferrolvm (again, after a kill),
# seeing only its own VG's device, logging to /run/ferrolvm/nodeN.log.
n=${1:?usage: ferrolvm-node-start N}
dev=$(cat /run/ferrolvm/vg$n.dev)
mkdir -p /var/lib/kubelet-node$n
KUBECONFIG=/etc/ferrolvm/kubeconfig FERROLVM_LOG=${FERROLVM_LOG:-info} \
  setsid /usr/local/bin/ferrolvm --devices "$dev" node --node-name node$n \
  --config /etc/ferrolvm/node$n.yaml \
  --csi-endpoint unix:///run/ferrolvm/node$n.sock \
  --kubelet-dir /var/lib/kubelet-node$n --orphan-check 3 \
  --metrics-listen 127.0.0.1:808$n \
  --kubelet-registration-path /run/ferrolvm/node$n.sock \
  >>/run/ferrolvm/node$n.log 2>&1 </dev/null &
echo $! > /run/ferrolvm/node$n.pid
