# The talk's demo: capacity-aware scheduling on a real control plane with
# two ferrolvm nodes in the VM, narrated with what kubectl and lvm2 see.
# Run by `cargo run -p vm-tests -- cluster-demo` (KUBECONFIG set; kubectl
# and vmsh on PATH). Fails if a pod lands anywhere but where the space is.
set -euo pipefail
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
capacity() {
  run kubectl get nodes -o 'custom-columns=NODE:.metadata.name,THICK-FREE:.metadata.annotations.capacity\.ferrolvm\.io/thick,THICK-MAX:.metadata.annotations.maxvolume\.ferrolvm\.io/thick,THIN-FREE:.metadata.annotations.capacity\.ferrolvm\.io/thin'
  run kubectl get csistoragecapacity -o 'custom-columns=CLASS:.storageClassName,NODE:.nodeTopology.matchLabels.topology\.ferrolvm\.io/node,CAPACITY:.capacity,MAXIMUM:.maximumVolumeSize'
}
claim() { # NAME SIZE
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ferrolvm-thick
  resources: {requests: {storage: $2}}
---
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  containers: [{name: c, image: "busybox:latest", imagePullPolicy: Never, command: [sleep, "3600"], volumeMounts: [{name: v, mountPath: /data}]}]
  volumes: [{name: v, persistentVolumeClaim: {claimName: $1}}]
YAML
  echo "claim and pod $1 ($2) created"
}
on_node1() { # NAME
  kubectl wait --for=jsonpath='{.status.phase}'=Bound "pvc/$1" --timeout=120s >/dev/null
  local node
  for _ in $(seq 50); do
    node=$(kubectl get pod "$1" -o 'jsonpath={.spec.nodeName}')
    [ -n "$node" ] && break
    sleep 0.2
  done
  echo "$1 is bound and scheduled on ${node:-nowhere}"
  [ "$node" = node1 ] || { echo "demo: $1 should have gone to node1" >&2; exit 1; }
}

step "Two nodes in the VM, node1 on vg1 and node2 on vg2, 8 GiB each: what lvm2 sees"
run vmsh 'lvm vgs vg1 vg2'
step "What each node publishes, and what kube-scheduler reads (csi-provisioner asks GetCapacity every 2 s)"
capacity

step "Fill node2's VG with lvm2, behind ferrolvm's back"
run vmsh 'lvm lvcreate -q -l 100%FREE -n filler vg2 && lvm vgs vg2'
for _ in $(seq 60); do
  cap=$(kubectl get csistoragecapacity -o json | jq -r '.items[] | select(.storageClassName=="ferrolvm-thick" and .nodeTopology.matchLabels["topology.ferrolvm.io/node"]=="node2") | .maximumVolumeSize // .capacity')
  [ "$cap" = 0 ] && break
  sleep 0.5
done
capacity

step "A 1 GiB claim: it fits only node1"
claim demo-fit 1Gi
on_node1 demo-fit
run kubectl get flv -o wide
run vmsh 'lvm lvs -o lv_name,lv_size,lv_tags vg1'

step "A 100 GiB claim: larger than any node, so its pod stays Pending"
claim demo-huge 100Gi
for _ in $(seq 100); do
  msg=$(kubectl get pod demo-huge -o 'jsonpath={.status.conditions[?(@.type=="PodScheduled")].message}')
  [ -n "$msg" ] && break
  sleep 0.3
done
echo "kube-scheduler: $msg"
case "$msg" in *"enough free storage"*) ;; *) echo "demo: no capacity reason" >&2; exit 1 ;; esac

step "Five 1 GiB claims at once: all go where the space is"
for i in 1 2 3 4 5; do claim "demo-five-$i" 1Gi; done
for i in 1 2 3 4 5; do on_node1 "demo-five-$i"; done
run kubectl get pods -o wide
run vmsh 'lvm lvs vg1 vg2'
capacity

step "Clean up: claims deleted, LVs removed (and wiped) by node1, the filler by lvm2"
kubectl delete pod --force --grace-period=0 demo-fit demo-huge demo-five-{1..5} >/dev/null 2>&1
kubectl delete pvc demo-fit demo-huge demo-five-{1..5} --wait=true >/dev/null
for _ in $(seq 100); do
  [ "$(kubectl get flv -o name | wc -l)" = 0 ] && break
  sleep 0.3
done
run kubectl get flv
run vmsh 'lvm lvremove -q -f vg2/filler && lvm lvs vg1 vg2'
echo "demo: done"
