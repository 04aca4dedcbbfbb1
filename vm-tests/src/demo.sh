#!/bin/sh
# ferrolvm's main job, step by step, inside a throwaway VM. Every step shows
# what lvm2's own `lvs` says about what ferrolvm did.
set -e
step() { echo; echo "==> $*"; }
show() { echo "--- lvs (stock lvm2):"; lvs -o lv_name,lv_attr,lv_size,segtype,devices demo; }

step "Two 512 MiB loop devices stand in for disks"
truncate -s 512M /tmp/d0.img /tmp/d1.img
L0=$(losetup -f --show /tmp/d0.img); L1=$(losetup -f --show /tmp/d1.img)
echo "$L0 $L1"

step "ferrolvm vgcreate demo $L0 $L1   (pvcreate happens implicitly)"
ferrolvm vgcreate demo $L0 $L1
vgs demo

step "ferrolvm lvcreate -n data -L 200m demo   (metadata commit, then device-mapper activation)"
ferrolvm lvcreate -n data -L 200m demo
show
ls -l /dev/demo/data /dev/mapper/demo-data

step "mkfs.ext4 and mount it"
mkfs.ext4 -q /dev/demo/data
mkdir -p /mnt/data && mount /dev/demo/data /mnt/data
echo "hello from ferrolvm" > /mnt/data/hello.txt
df -h /mnt/data | tail -1

step "Grow it online: ferrolvm lvextend -L +200m demo/data, then resize2fs"
ferrolvm lvextend -L +200m demo/data
resize2fs /dev/demo/data >/dev/null 2>&1
df -h /mnt/data | tail -1
cat /mnt/data/hello.txt
show

step "A striped LV across both disks"
ferrolvm lvcreate -n fast -i 2 -I 64k -L 128m demo
dmsetup table demo-fast
show

step "A thin pool, and a 1 GiB thin volume in it (more than the pool holds: thin provisioning)"
ferrolvm lvcreate --type thin-pool -L 256m -n pool demo
ferrolvm lvcreate -T demo/pool -V 1g -n thin
mkfs.ext4 -q /dev/demo/thin
mkdir -p /mnt/thin && mount /dev/demo/thin /mnt/thin
echo "version 1" > /mnt/thin/state.txt && sync
lvs -o lv_name,lv_attr,lv_size,pool_lv,data_percent,metadata_percent demo

step "Snapshot it while mounted (ferrolvm lvcreate -s), then change the original"
ferrolvm lvcreate -s demo/thin -n thin-snap
echo "version 2" > /mnt/thin/state.txt && sync
ferrolvm lvchange -ay -K demo/thin-snap
mkdir -p /mnt/snap && mount -o ro /dev/demo/thin-snap /mnt/snap
echo "original says: $(cat /mnt/thin/state.txt)   snapshot says: $(cat /mnt/snap/state.txt)"
lvs -o lv_name,lv_attr,lv_size,pool_lv,origin,data_percent demo

step "Grow the thin volume online"
ferrolvm lvextend -L +1g demo/thin
resize2fs /dev/demo/thin >/dev/null 2>&1
df -h /mnt/thin | tail -1

step "The CSI driver: ferrolvm node --standalone serves Identity, Controller and Node on a socket"
printf 'device-classes:\n  - {name: thick, volume-group: demo, default: true, spare-gb: 0}\n  - {name: thin, volume-group: demo, type: thin, thin-pool: {name: pool, overprovision-ratio: 40.0}}\n' > /tmp/node.yaml
cat /tmp/node.yaml
ferrolvm node --config /tmp/node.yaml --node-name demo-node --csi-endpoint unix:///tmp/csi.sock --standalone &
NODE=$!
for i in $(seq 100); do [ -S /tmp/csi.sock ] && break; sleep 0.1; done
csi() { ferrolvm csi --csi-endpoint unix:///tmp/csi.sock "$@"; }

POD=/var/lib/kubelet/pods/demo-pod/volumes
step "CreateVolume pvc-demo (thin class, 100 MiB), then NodePublishVolume under kubelet's directory (mkfs ext4 + mount)"
OUT=$(csi create-volume pvc-demo --bytes 104857600 --class thin)
set -- $OUT; VOL=$1
echo "volume id $VOL, $2 bytes"
csi publish "$VOL" $POD/csi
echo "written through CSI" > $POD/csi/note.txt && sync
df -h $POD/csi | tail -1
lvs -o lv_name,lv_attr,lv_size,pool_lv,lv_tags demo

step "ControllerExpandVolume + NodeExpandVolume to 200 MiB, online"
csi expand "$VOL" 209715200 $POD/csi
df -h $POD/csi | tail -1

step "CreateSnapshot, change the file, then restore the snapshot into a new volume"
SNAP=$(csi snapshot snap-demo "$VOL")
echo "snapshot id $SNAP"
echo "changed after the snapshot" > $POD/csi/note.txt && sync
OUT=$(csi create-volume pvc-restored --bytes 209715200 --class thin --from-snapshot "$SNAP")
set -- $OUT; RESTORED=$1
csi publish "$RESTORED" $POD/restored
echo "live volume says:     $(cat $POD/csi/note.txt)"
echo "restored volume says: $(cat $POD/restored/note.txt)"
lvs -o lv_name,lv_attr,lv_size,pool_lv,origin,data_percent demo

step "NodeUnpublishVolume, DeleteSnapshot, DeleteVolume"
csi unpublish "$RESTORED" $POD/restored
csi unpublish "$VOL" $POD/csi
csi delete-volume "$RESTORED"
csi delete-snapshot "$SNAP"
csi delete-volume "$VOL"
kill -TERM $NODE; wait $NODE
lvs -o lv_name,lv_attr,lv_size,pool_lv demo

step "Clean up: unmount, ferrolvm lvremove, ferrolvm vgremove"
umount /mnt/snap /mnt/thin /mnt/data
for lv in thin-snap thin pool data fast; do ferrolvm lvremove demo/$lv; done
ferrolvm vgremove demo
echo "done"
