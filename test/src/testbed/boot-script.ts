/**
 * The script that turns a fresh set of namespaces into a simulated validator
 * host and execs a real systemd as its PID 1. It runs as PID 1 of a new PID
 * namespace (unshare --fork), in a private mount namespace, already inside the
 * host's own cgroups and cgroup namespace (see lab.ts).
 *
 * Why each step (see /work/shared/testbed.md for the incident that motivated
 * them): a systemd booted against the machine's real / emptied the machine's
 * /tmp (systemd-tmpfiles) and wrote kernel settings (sysctl, binfmt,
 * modules-load). So the host gets an overlay root whose writes land in a
 * tmpfs, fresh tmpfs at /run, /tmp and /var/tmp, a minimal /dev that holds no
 * real disk or console, /sys and /proc/sys read-only, every early unit that
 * touches the shared kernel masked, and every generator masked, before
 * pivot_root detaches it from the machine's tree for good.
 *
 * Inputs come from the environment (GL_*) so nothing needs quoting:
 *   GL_NAME      host name (also the hostname)
 *   GL_HOSTDIR   empty directory that becomes this host's tmpfs
 *   GL_TMPFS     size of that tmpfs (e.g. 2g; only used pages cost memory)
 *   GL_CGMODE    'hybrid' (v1 hierarchies + cgroup2 at unified) or 'unified'
 *   GL_CGV1      space-separated v1 hierarchies to mount, e.g. "cpu memory name=systemd"
 *   GL_MASK      space-separated units to mask
 *   GL_HOSTS     contents for /etc/hosts
 *   GL_MACHINEID 32 hex chars
 *   GL_USERS     space-separated system users to create (e.g. "guts")
 *   GL_SHARE     newline-separated directories of the machine to bind
 *                read-only at the same path in the host (the checkout)
 * The script blocks on a line from stdin after the mounts so the parent can
 * wire the network before any unit starts.
 */
export const BOOT_SCRIPT = String.raw`#!/bin/bash
set -euo pipefail
D="$GL_HOSTDIR"
mount -t tmpfs -o "mode=0755,size=$GL_TMPFS" "gutslab-$GL_NAME" "$D"
mkdir -p "$D/upper" "$D/work" "$D/root"
mount -t overlay -o "lowerdir=/,upperdir=$D/upper,workdir=$D/work" "gutslab-$GL_NAME" "$D/root"
R="$D/root"

# /proc: fresh for the new PID namespace; kernel tunables read-only except the
# per-namespace network ones.
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"
mount --bind "$R/proc/sys/net" "$R/proc/sys/net"
mount -o remount,bind,ro,nosuid,nodev,noexec "$R/proc/sys"
if [ -e "$R/proc/sysrq-trigger" ]; then
  mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"
  mount -o remount,bind,ro "$R/proc/sysrq-trigger"
fi

# /sys read-only (it shows this network namespace's links), cgroups writable
# but rooted at this host's own cgroups (cgroup namespace).
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
if [ "$GL_CGMODE" = unified ]; then
  mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
else
  mount -t tmpfs -o mode=0755,nosuid,nodev,noexec,size=1m cgroup "$R/sys/fs/cgroup"
  for h in $GL_CGV1; do
    case "$h" in
      name=systemd) d=systemd; o=none,name=systemd ;;
      *) d="$h"; o="$h" ;;
    esac
    mkdir -p "$R/sys/fs/cgroup/$d"
    mount -t cgroup -o "nosuid,nodev,noexec,$o" cgroup "$R/sys/fs/cgroup/$d"
  done
  mkdir -p "$R/sys/fs/cgroup/unified"
  mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup/unified"
  mount -o remount,ro,nosuid,nodev,noexec,mode=0755 "$R/sys/fs/cgroup"
fi

# A minimal /dev: no disks, no machine console, no kmsg (journald would
# otherwise import and write the machine's kernel log).
mount -t tmpfs -o mode=0755,nosuid,size=1m dev "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3
mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/full" c 1 7
mknod -m 666 "$R/dev/random" c 1 8
mknod -m 666 "$R/dev/urandom" c 1 9
mknod -m 666 "$R/dev/tty" c 5 0
touch "$R/dev/console"
mount --bind /dev/null "$R/dev/console"
mkdir -p "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"

mount -t tmpfs -o mode=0755,nosuid,nodev run "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$R/tmp"
mount -t tmpfs -o mode=1777,nosuid,nodev vartmp "$R/var/tmp"

# The checkout at the path it has on the machine. The overlay alone shows it
# only where no fresh mount above hides it: a checkout under /tmp would be
# missing. Read-only, so no host can change the machine's checkout.
while IFS= read -r d; do
  [ -n "$d" ] || continue
  mkdir -p "$R$d"
  mount --bind "$d" "$R$d"
  mount -o remount,bind,ro "$R$d"
done <<< "$GL_SHARE"

# Host identity and configuration, all written into the overlay's upper layer.
printf '%s\n' "$GL_NAME" > "$R/etc/hostname"
printf '%s\n' "$GL_MACHINEID" > "$R/etc/machine-id"
printf '%s' "$GL_HOSTS" > "$R/etc/hosts"
hostname "$GL_NAME"
for u in $GL_USERS; do
  if ! chroot "$R" getent passwd "$u" >/dev/null; then
    useradd --root "$R" --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
  fi
done

S="$R/etc/systemd/system"
# Forget whatever the machine itself has enabled (postgresql, timers, gettys).
rm -rf "$S"/*.wants "$S"/dbus-org.freedesktop.timesync1.service
for u in $GL_MASK; do ln -sfn /dev/null "$S/$u"; done
mkdir -p "$R/etc/systemd/system-generators"
for g in "$R"/lib/systemd/system-generators/*; do
  ln -sfn /dev/null "$R/etc/systemd/system-generators/$(basename "$g")"
done
mkdir -p "$R/etc/systemd/journald.conf.d" "$R/etc/systemd/system.conf.d"
printf '[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRuntimeMaxUse=32M\n' > "$R/etc/systemd/journald.conf.d/gutslab.conf"
printf '[Manager]\nShowStatus=no\nDefaultTimeoutStopSec=15s\nDefaultTimeoutStartSec=60s\n' > "$R/etc/systemd/system.conf.d/gutslab.conf"
mkdir -p "$R/etc/guts" "$R/usr/local/bin"

# Wait for the parent to wire eth0.
read -r _go

cd "$R"
mkdir -p run/gutslab-oldroot
pivot_root . run/gutslab-oldroot
cd /
umount -l /run/gutslab-oldroot
rmdir /run/gutslab-oldroot
# A real host's systemd makes / shared at boot, but not when it finds itself in a
# container (container= below), and unshare left every mount private. Services
# need it shared: systemd sets up LoadCredential= in a child mount namespace and
# the mount reaches the service only by propagation. Shared within this host's
# own namespace only: nothing propagates to the machine's tree, already detached.
mount --make-rshared /
ip link set dev lo up
exec env -i container=gutslab PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --unit=multi-user.target --log-target=journal --show-status=no
`;

/**
 * Units masked in every host. Kernel-wide or machine-wide effects: sysctl,
 * binfmt, modules-load, tmpfiles (emptied the machine's /tmp once), udev,
 * remount-fs, sysusers, timesyncd (would set the shared clock), random-seed,
 * pstore, kernel fs mounts. The rest only cost boot time (gettys, logind,
 * timers, postgresql that this machine happens to have installed).
 */
export const MASKED_UNITS = [
  'systemd-sysctl.service',
  'systemd-binfmt.service',
  'proc-sys-fs-binfmt_misc.automount',
  'proc-sys-fs-binfmt_misc.mount',
  'systemd-modules-load.service',
  'kmod-static-nodes.service',
  'systemd-remount-fs.service',
  'systemd-sysusers.service',
  'systemd-tmpfiles-setup.service',
  'systemd-tmpfiles-setup-dev.service',
  'systemd-tmpfiles-clean.service',
  'systemd-tmpfiles-clean.timer',
  'systemd-udevd.service',
  'systemd-udevd-control.socket',
  'systemd-udevd-kernel.socket',
  'systemd-udev-trigger.service',
  'systemd-udev-settle.service',
  'systemd-hwdb-update.service',
  'systemd-logind.service',
  'getty.target',
  'getty@.service',
  'serial-getty@.service',
  'console-getty.service',
  'container-getty@.service',
  'systemd-timesyncd.service',
  'systemd-random-seed.service',
  'systemd-pstore.service',
  'systemd-firstboot.service',
  'systemd-machine-id-commit.service',
  'systemd-repart.service',
  'systemd-pcrphase.service',
  'systemd-pcrphase-sysinit.service',
  'systemd-journald-audit.socket',
  'systemd-update-done.service',
  'systemd-journal-catalog-update.service',
  'ldconfig.service',
  'dev-hugepages.mount',
  'sys-fs-fuse-connections.mount',
  'sys-kernel-config.mount',
  'sys-kernel-debug.mount',
  'sys-kernel-tracing.mount',
  'systemd-ask-password-wall.path',
  'systemd-ask-password-console.path',
  'systemd-fsck-root.service',
  'systemd-quotacheck.service',
  'systemd-rfkill.socket',
  'systemd-rfkill.service',
  'systemd-hibernate-resume@.service',
  'postgresql.service',
  'postgresql@.service',
  'e2scrub_reap.service',
  'e2scrub_all.timer',
  'apt-daily.timer',
  'apt-daily-upgrade.timer',
  'dpkg-db-backup.timer',
  'fstrim.timer',
  'man-db.timer',
  'logrotate.timer',
  'cron.service',
  'networking.service',
  'systemd-networkd.service',
  'systemd-networkd-wait-online.service',
  'systemd-resolved.service',
  'ssh.service',
  'rsyslog.service',
];
