#!/bin/sh
# setup.sh: container-specific tweaks of the pyweb/debian-systemd image; run as root
# inside the image root (docker build RUN or chroot of the debootstrap tree).
set -eu

# apt: keep downloaded .debs so /var/cache/apt/archives can be a shared host cache.
rm -f /etc/apt/apt.conf.d/docker-clean
cat > /etc/apt/apt.conf.d/90pyweb-keep-debs <<'CONF'
Binary::apt::APT::Keep-Downloaded-Packages "true";
APT::Keep-Downloaded-Packages "true";
CONF
# No recommends in test hosts unless a role asks for them.
cat > /etc/apt/apt.conf.d/90pyweb-no-recommends <<'CONF'
APT::Install-Recommends "false";
CONF

# Units to mask. Tested (bookworm + trixie, flags in README.md): with nothing masked
# no unit fails. We mask only what gets in the way of tests:
# - apt-daily*.timer would run apt in the background and hold the dpkg lock while
#   Ansible's apt module runs;
# - console-getty/getty@tty1 start agetty on the console when the container has a tty.
for unit in \
    apt-daily.timer \
    apt-daily-upgrade.timer \
    console-getty.service \
    getty@tty1.service \
    ; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done

# Boot to multi-user, not graphical.
ln -sf /lib/systemd/system/multi-user.target /etc/systemd/system/default.target

# ssh host keys are generated per container at boot (ssh-keygen -A), not baked in.
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
cat > /etc/systemd/system/ssh.service.d/pyweb-hostkeys.conf <<'CONF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
CONF

# Each container gets its own machine-id at boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id

# Empty apt lists: a test must run apt-get update (stale lists 404 on old versions).
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
       /var/cache/apt/archives/partial/* /var/log/apt/* /tmp/* /var/tmp/*
rm -f /var/log/dpkg.log /var/log/alternatives.log /var/log/bootstrap.log
# ...and make the empty lists look old: Ansible's apt `cache_valid_time` judges freshness by the update stamp, else
# by the lists directory's mtime, and would otherwise skip the update on a host built minutes ago.
rm -f /var/lib/apt/periodic/update-success-stamp
touch -d '2000-01-01 00:00:00 UTC' /var/lib/apt/lists
