#!/bin/sh
# csi-sanity against `ferrolvm node --standalone` in three configurations:
# a thick class with mount access, a thin class with mount access, and a
# thick class with block access.
truncate -s 8G /tmp/d0.img; L=$(losetup -f --show /tmp/d0.img)
ferrolvm vgcreate csivg $L >/dev/null
ferrolvm lvcreate --type thin-pool -L 3g -n pool csivg >/dev/null
cat > /tmp/node.yaml <<Y
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
ferrolvm node --devices $L --config /tmp/node.yaml --node-name vm --csi-endpoint unix:///tmp/csi.sock --standalone > /tmp/node.log 2>&1 &
for i in $(seq 100); do [ -S /tmp/csi.sock ] && break; sleep 0.1; done
printf 'ferrolvm.io/device-class: thick\n' > /tmp/thick.yaml
printf 'ferrolvm.io/device-class: thin\ncsi.storage.k8s.io/fstype: xfs\n' > /tmp/thin.yaml
rc=0
run() {
  echo "==== csi-sanity: $1"
  shift
  rm -rf /tmp/sanity; mkdir -p /tmp/sanity
  csi-sanity --csi.endpoint unix:///tmp/csi.sock --csi.testvolumesize 1073741824 \
    --csi.mountdir /tmp/sanity/mnt --csi.stagingdir /tmp/sanity/stage -ginkgo.no-color "$@" 2>&1 \
    | grep -E "^(Ran |SUCCESS|FAIL|\[FAIL\]|  \[FAILED\]|.*Expected|.*to equal|.*rpc error)" || true
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
}
# Snapshots and clones exist only on thin classes: on thick ones those specs cannot apply.
THICK_SKIP='source snapshot|source volume|CreateSnapshot|DeleteSnapshot|ListSnapshots'
run "thick class, mount access" --csi.testvolumeparameters /tmp/thick.yaml -ginkgo.skip "$THICK_SKIP"
run "thin class, mount access (xfs)" --csi.testvolumeparameters /tmp/thin.yaml
run "thick class, block access" --csi.testvolumeparameters /tmp/thick.yaml --csi.testvolumeaccesstype block -ginkgo.skip "$THICK_SKIP"
kill -TERM %1; wait
echo "==== node log (last lines)"; tail -5 /tmp/node.log
exit $rc
