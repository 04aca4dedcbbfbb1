#!/bin/sh
# csi-sanity against `ferrolvm node --standalone`, started as the README
# shows it (no --devices: it scans every block device), in three
# configurations — a thick class with mount access, a thin class with mount
# access (xfs), a thick class with block access — each run three times in a
# row. Targets live under the kubelet directory, as kubelet's would. The
# script's exit status is csi-sanity's: any run that fails fails it.
truncate -s 8G /tmp/d0.img; L=$(losetup -f --show /tmp/d0.img)
ferrolvm vgcreate csivg $L >/dev/null
ferrolvm lvcreate --type thin-pool -L 3g -n pool csivg >/dev/null
mkdir -p /etc/ferrolvm
cat > /etc/ferrolvm/lvmd.yaml <<Y
device-classes:
  - name: thick
    volume-group: csivg
    default: true
    spare-gb: 0
  - name: thin
    volume-group: csivg
    type: thin
    thin-pool:
      name: pool
      overprovision-ratio: 10.0
Y
SOCK=/var/lib/kubelet/plugins/ferrolvm.io/node/csi.sock
ferrolvm node --config /etc/ferrolvm/lvmd.yaml --node-name vm --csi-endpoint unix://$SOCK --standalone > /tmp/node.log 2>&1 &
for i in $(seq 100); do [ -S $SOCK ] && break; sleep 0.1; done
printf 'ferrolvm.io/device-class: thick\n' > /tmp/thick.yaml
printf 'ferrolvm.io/device-class: thin\ncsi.storage.k8s.io/fstype: xfs\n' > /tmp/thin.yaml
ROOT=/var/lib/kubelet/pods/csi-sanity
rc=0
run() {
  echo "==== csi-sanity: $1"
  shift
  rm -rf $ROOT; mkdir -p $ROOT
  status=0
  csi-sanity --csi.endpoint unix://$SOCK --csi.testvolumesize 1073741824 \
    --csi.mountdir $ROOT/mnt --csi.stagingdir $ROOT/stage -ginkgo.no-color "$@" \
    > /tmp/sanity-run.log 2>&1 || status=$?
  grep -E "^(Ran |SUCCESS|FAIL|\[FAIL\]|  \[FAILED\]|.*Expected|.*to equal|.*rpc error)" /tmp/sanity-run.log \
    || { echo "(no csi-sanity summary; its last lines:)"; tail -20 /tmp/sanity-run.log; }
  echo "==== csi-sanity exit status: $status"
  [ "$status" = 0 ] || rc=1
}
# Snapshots and clones exist only on thin classes: on thick ones those specs cannot apply.
THICK_SKIP='source snapshot|source volume|CreateSnapshot|DeleteSnapshot|ListSnapshots|GetSnapshot'
for round in 1 2 3; do
  run "thick class, mount access" --csi.testvolumeparameters /tmp/thick.yaml -ginkgo.skip "$THICK_SKIP"
  run "thin class, mount access (xfs)" --csi.testvolumeparameters /tmp/thin.yaml
  run "thick class, block access" --csi.testvolumeparameters /tmp/thick.yaml --csi.testvolumeaccesstype block -ginkgo.skip "$THICK_SKIP"
done
kill -TERM %1; wait
echo "==== node log (last lines)"; tail -5 /tmp/node.log
exit $rc
