#!/usr/bin/env bash
# Build a systemd-capable Debian base image from Debian's archive (no registry needed):
#   build-debian-image.sh SUITE TAG
# debootstrap into a scratch folder, `podman import` it, done. The tag carries a hash of
# this script, so a change here rebuilds the image; an existing tag is reused (cache).
set -euo pipefail
suite=$1 tag=$2
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What a Debian cloud image has and Molecule needs: systemd as PID 1, python3 for Ansible,
# python3-apt for the apt module, sudo for become, CA certificates for HTTPS.
packages=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,ca-certificates,procps,iproute2,locales

if podman image exists "$tag"; then
  echo "image $tag: cached"
  exit 0
fi
work=$(mktemp -d /var/tmp/debootstrap-"$suite".XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "image $tag: debootstrap $suite from $mirror"
debootstrap --variant=minbase --include="$packages" "$suite" "$work/root" "$mirror" >"$work/log" 2>&1 \
  || { tail -n 30 "$work/log"; exit 1; }
# Units that make no sense in a container and only slow boot or fail.
for unit in getty.target systemd-remount-fs.service sys-kernel-config.mount \
            systemd-logind.service console-getty.service; do
  ln -sf /dev/null "$work/root/etc/systemd/system/$unit"
done
echo "$suite-container" >"$work/root/etc/hostname"
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
tar -C "$work/root" -c . | podman import \
  --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$tag" >/dev/null
echo "image $tag: built"
