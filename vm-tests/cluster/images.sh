#!/usr/bin/env bash
# images.sh OUT: the container images the VM's kubelets run, built locally
# from Debian's busybox-static with no registry and no daemon, as OCI image
# layout archives that `ctr images import` takes:
#   OUT/busybox.tar  docker.io/library/busybox:latest (what pods name as busybox:latest)
#   OUT/pause.tar    localhost/ferrolvm/pause:1 (containerd's sandbox image)
# One layer, shared by both: /bin/busybox and a link per applet. The pause
# image's entrypoint waits for TERM or INT and exits 0, as pause does.
# Reproducible: fixed owners and mtimes, sorted entries.
set -euo pipefail
out=${1:?usage: images.sh OUT}
bb=/bin/busybox
[ -x "$bb" ] || { echo "images: $bb is missing (apt-get install busybox-static)" >&2; exit 1; }
if ldd "$bb" >/dev/null 2>&1; then
  echo "images: $bb is dynamically linked; the images need busybox-static" >&2
  exit 1
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/root/bin" "$work/root/tmp" "$work/root/etc" "$work/root/proc" "$work/root/sys" "$work/root/dev"
cp "$bb" "$work/root/bin/busybox"
for applet in $("$bb" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$work/root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$work/root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$work/root/etc/group"
chmod 1777 "$work/root/tmp"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/root" -cf "$work/layer.tar" .

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# image NAME REF ENTRYPOINT-JSON CMD-JSON: OUT/NAME.tar
image() {
  local name=$1 ref=$2 entrypoint=$3 cmd=$4
  local d="$work/$name"
  mkdir -p "$d/blobs/sha256"
  local layer
  layer=$(sha "$work/layer.tar")
  cp "$work/layer.tar" "$d/blobs/sha256/$layer"
  cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Entrypoint":$entrypoint,"Cmd":$cmd,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$layer"]},"history":[{"created_by":"ferrolvm vm-tests/cluster/images.sh from busybox-static"}]}
JSON
  local config
  config=$(sha "$work/config.json")
  cp "$work/config.json" "$d/blobs/sha256/$config"
  cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$(size "$work/config.json")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$layer","size":$(size "$work/layer.tar")}]}
JSON
  local manifest
  manifest=$(sha "$work/manifest.json")
  cp "$work/manifest.json" "$d/blobs/sha256/$manifest"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
  cat >"$d/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest","size":$(size "$work/manifest.json"),"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"$ref","org.opencontainers.image.ref.name":"${ref##*:}"}}]}
JSON
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$d" -cf "$out/$name.tar" .
}

image busybox docker.io/library/busybox:latest 'null' '["sh"]'
image pause localhost/ferrolvm/pause:1 \
  '["/bin/sh","-c","trap \"exit 0\" TERM INT; while :; do sleep 3600 & wait; done"]' 'null'
