#!/bin/sh
# PID 1 of the metrolab guest, after switch_root into the host's root filesystem (read-only 9p).
# Makes the few writable places programs need, loads the guest kernel's modules, runs the
# command the host left on the results share, stores its exit code there and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
arg() { sed -n "s/.*metrolab\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs tmpfs /var/log
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
echo 1 > /proc/sys/kernel/sysrq

RESULTS=$(arg results)
# the guest kernel's modules live in metrolab's cache (<base>/lib/modules/<release>), not under the
# host's /lib/modules: modprobe -d points there, and the kernel's own module requests go the same way
MODBASE=$(arg modbase)
echo "$(dirname "$0")/guest_modprobe.sh" > /proc/sys/kernel/modprobe
modprobe() { command modprobe -d "$MODBASE" "$@"; }
modprobe overlay
# writable, but showing the host's content: pyenv and venvs live under /root, clones under /tmp
for d in /tmp /root /var/cache /var/lib; do
  [ -d "$d" ] || continue
  mkdir -p "/run/ovl$d/u" "/run/ovl$d/w"
  mount -t overlay overlay -o "lowerdir=$d,upperdir=/run/ovl$d/u,workdir=/run/ovl$d/w" "$d" ||
    echo "metrolab-guest: no overlay on $d"
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results "$RESULTS" || {
  echo "metrolab-guest: cannot mount the results share"; echo o > /proc/sysrq-trigger; while :; do :; done; }

# host directories the command writes (a run directory): writable shares over the read-only root
i=0
for d in $(arg rw | tr ',' ' '); do
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 "rw$i" "$d" || echo "metrolab-guest: cannot mount $d"
  i=$((i + 1))
done

for m in veth sch_netem sch_tbf sch_htb sch_red sch_fq sch_fq_codel sch_prio sch_ingress cls_u32 \
         nf_tables nft_numgen rdma_rxe ib_uverbs rdma_ucm; do
  modprobe "$m" 2>/dev/null || echo "metrolab-guest: module $m not loaded"
done
ip link set lo up
# no network and a read-only /etc/hosts: a name that resolves locally keeps resolvers (Ray) off DNS
hostname localhost 2>/dev/null
# the host's resolver (a private address) is nowhere from here: a lookup from a lab namespace would
# follow the lab's default route to a switch that answers ICMP unreachable. Resolve on loopback only.
echo "nameserver 127.0.0.1" > /run/resolv.conf && mount --bind /run/resolv.conf /etc/resolv.conf
# the first ICMP error the kernel sends patches code it runs (a static key on its rate-limit path);
# under multi-threaded TCG a vCPU running that code while it is patched took an int3 oops (twice, in
# inet_getpeer mid-run). Send one now, while nothing else runs: a ping from a scratch host through a
# scratch router that has no route for it, which answers net unreachable (ip_error -> icmp_send).
if ip netns add mlwh 2>/dev/null && ip netns add mlwr 2>/dev/null; then
  ip -n mlwh link add mlw0 type veth peer name mlw1 netns mlwr &&
    ip -n mlwh addr add 192.0.2.1/30 dev mlw0 && ip -n mlwr addr add 192.0.2.2/30 dev mlw1 &&
    ip -n mlwh link set mlw0 up && ip -n mlwr link set mlw1 up &&
    ip -n mlwh route add default via 192.0.2.2 &&
    ip netns exec mlwr sysctl -qw net.ipv4.ip_forward=1 &&
    ip netns exec mlwh ping -n -c 2 -i 0.2 -W 1 198.51.100.1 > /dev/null 2>&1
fi
ip netns del mlwh 2>/dev/null; ip netns del mlwr 2>/dev/null
# and the keys the tests flip over and over, held on for good (why: guest_pin.sh)
unshare -n sh "$(dirname "$0")/guest_pin.sh" &
i=0
while [ ! -e /run/metrolab-pin.ready ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
[ -e /run/metrolab-pin.ready ] || echo "metrolab-guest: static keys not pinned"
echo "metrolab-guest: ready $(uname -r)"

stty -F /dev/ttyS0 raw -echo 2>/dev/null  # the command's stdout: bytes as written
sh "$RESULTS/command.sh" < /dev/null
echo $? > "$RESULTS/exit-code.tmp" && mv "$RESULTS/exit-code.tmp" "$RESULTS/exit-code"
sync
for d in $(arg rw | tr ',' ' '); do umount "$d" 2>/dev/null; done
umount "$RESULTS" 2>/dev/null
echo o > /proc/sysrq-trigger
while :; do :; done  # sleep here hit an I/O error once the power-off began
