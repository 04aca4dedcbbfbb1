# The talk's demo: capacity-aware scheduling on a real control plane with
# two ferrolvm nodes in the VM, each with its real kubelet, narrated with
# what kubectl, the pods and lvm2 see. Run by `cargo run -p vm-tests --
# cluster-demo` (KUBECONFIG set; kubectl and vmsh on PATH). Fails if a pod
# lands anywhere but where the space is, or does not see its volume grow.
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
  terminationGracePeriodSeconds: 0
  containers:
  - name: web
    image: busybox:latest
    imagePullPolicy: Never
    # nginx-like: a page on its volume, served; the log says where it lives.
    command: [sh, -c, 'echo "<h1>$1 on \$(cat /etc/hostname)</h1>" > /data/index.html; grep " /data " /proc/mounts; exec httpd -f -v -p 8080 -h /data']
    volumeMounts: [{name: v, mountPath: /data}]
  volumes: [{name: v, persistentVolumeClaim: {claimName: $1}}]
YAML
  echo "claim and pod $1 ($2) created"
}
node_of() { kubectl get pod "$1" -o 'jsonpath={.spec.nodeName}'; }
on() { # NODE NAME: bound, scheduled on NODE, running
  kubectl wait --for=jsonpath='{.status.phase}'=Bound "pvc/$2" --timeout=120s >/dev/null
  kubectl wait --for=condition=Ready "pod/$2" --timeout=180s >/dev/null
  local node
  node=$(node_of "$2")
  echo "$2 is bound, scheduled on $node, and running"
  [ "$node" = "$1" ] || { echo "demo: $2 should have gone to $1" >&2; exit 1; }
}
step "Two nodes in the VM, node1 on vg1 and node2 on vg2, 8 GiB each, each with its kubelet"
run kubectl get nodes -o wide
run kubectl get csinode -o 'custom-columns=NODE:.metadata.name,DRIVERS:.spec.drivers[*].name,TOPOLOGY:.spec.drivers[*].topologyKeys'
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
on node1 demo-fit
run kubectl get flv -o wide
run vmsh 'lvm lvs -o lv_name,lv_size,lv_tags vg1'
step "The pod serves a page from its volume"
run kubectl exec demo-fit -- wget -qO- http://127.0.0.1:8080/
run kubectl logs demo-fit

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
for i in 1 2 3 4 5; do on node1 "demo-five-$i"; done
run kubectl get pods -o wide
run vmsh 'lvm lvs vg1 vg2'
capacity

step "lvm2 frees node2; node1 is nearly full: the next claims go to node2"
run vmsh 'lvm lvremove -q -f vg2/filler && lvm vgs vg1 vg2'
sleep 4
for i in 1 2 3; do claim "demo-next-$i" 1Gi; done
for i in 1 2 3; do on node2 "demo-next-$i"; done
run kubectl get pods -o wide

step "demo-next-1 grows from 1 GiB to 2 GiB while its pod serves"
run kubectl exec demo-next-1 -- df -h /data
before=$(kubectl exec demo-next-1 -- stat -f -c '%b %S' /data | awk '{ print $1 * $2 }')
run kubectl patch pvc demo-next-1 -p '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}'
after=$before
for _ in $(seq 120); do
  after=$(kubectl exec demo-next-1 -- stat -f -c '%b %S' /data | awk '{ print $1 * $2 }')
  [ "$after" -gt $((before + (900 << 20))) ] && break
  sleep 1
done
run kubectl exec demo-next-1 -- df -h /data
[ "$after" -gt $((before + (900 << 20))) ] || { echo "demo: the pod never saw its filesystem grow" >&2; exit 1; }
run kubectl get pvc demo-next-1
run kubectl exec demo-next-1 -- wget -qO- http://127.0.0.1:8080/


