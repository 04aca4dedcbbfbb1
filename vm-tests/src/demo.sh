#!/bin/sh
# A walk through ferrolvm's main job inside the VM. Placeholder until activation lands.
set -e
step() { echo; echo "==> $*"; }
step "Make two 256 MiB loop devices"
truncate -s 256M /tmp/d0.img /tmp/d1.img
L0=$(losetup -f --show /tmp/d0.img); L1=$(losetup -f --show /tmp/d1.img)
echo "$L0 $L1"
step "ferrolvm vgcreate demo $L0 $L1"
ferrolvm vgcreate demo $L0 $L1
step "ferrolvm lvcreate -an -n data -L 64m demo"
ferrolvm lvcreate -an -n data -L 64m demo
step "lvs (lvm2) sees it"
lvs demo
