#!/bin/sh
# Holds the kernel's runtime-toggled static keys on, for the guest's whole life (started by
# guest_init.sh under `unshare -n`: its own network namespace, which this process keeps alive).
#
# Why: a static key whose count goes 0 -> 1 (or back) rewrites the kernel's code at every site that
# tests it (text_poke with an int3 first). Under multi-threaded TCG a vCPU executing such a site while
# the other patches it can take an "Oops: int3" and the guest dies. Seen in CI: netstamp_needed_key
# at __netif_receive_skb_core+0x36 (the int3 is the site's first byte), flipped on by a capture's
# SO_TIMESTAMPNS socket while the other vCPU received packets. Tests open and close such things all
# the time (captures, pings, nft tables, rxe's UDP tunnel); held here, their counts never reach 0.
ip link set lo up
ip link add mlpin0 type veth peer name mlpin1 && ip link set mlpin0 up && ip link set mlpin1 up
# ingress_needed_key, egress_needed_key
tc qdisc add dev mlpin0 clsact || echo "metrolab-guest: pin: no clsact"
# nf_hooks_needed: every inet hook (IPv4 and IPv6), and the netdev hooks
nft -f - <<NFT || echo "metrolab-guest: pin: nft refused"
table inet metrolab_pin {
  chain c_pre { type filter hook prerouting priority 0; policy accept; }
  chain c_in { type filter hook input priority 0; policy accept; }
  chain c_fwd { type filter hook forward priority 0; policy accept; }
  chain c_out { type filter hook output priority 0; policy accept; }
  chain c_post { type filter hook postrouting priority 0; policy accept; }
}
table netdev metrolab_pin {
  chain c_in { type filter hook ingress device "mlpin0" priority 0; policy accept; }
  chain c_out { type filter hook egress device "mlpin0" priority 0; policy accept; }
}
NFT
# once keys: the secrets TCP and UDP draw on first use (net_secret, ts_secret, inet/udp ehash and the
# IPv6 ones: net_get_random_once) switch their DO_ONCE key off in deferred work, patching code the
# other vCPU may be running: a main job's guest died so at secure_ipv4_port_ephemeral+0x28 on its
# first TCP connect. A TCP connection and a datagram on each family's loopback use them up here first
python3 -S -I -c '
import socket
for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    try:
        srv = socket.socket(fam)
        srv.bind((addr, 0))
        srv.listen(1)
        c = socket.create_connection(srv.getsockname()[:2], timeout=5)
        a = srv.accept()[0]
        u, v = socket.socket(fam, socket.SOCK_DGRAM), socket.socket(fam, socket.SOCK_DGRAM)
        u.bind((addr, 0))
        u.settimeout(5)
        v.sendto(b"x", u.getsockname())
        u.recv(1)
        for s in (c, a, srv, u, v):
            s.close()
    except OSError as e:
        print("metrolab-guest: pin: no loopback", addr, e)
'
sleep 1  # the deferred work that switches the once keys off, done before the first test
# sockets: SO_TIMESTAMPNS (netstamp_needed_key); UDP_ENCAP (100) as L2TP (3), which sets no receive
# hook, on IPv4 and IPv6 (udp_encap_needed_key, udpv6_encap_needed_key: rxe's tunnel flips them)
exec python3 -S -I -c '
import signal, socket
held = [socket.socket(f, socket.SOCK_DGRAM) for f in (socket.AF_INET, socket.AF_INET6)]
for s in held:
    s.setsockopt(socket.IPPROTO_UDP, 100, 3)
held[0].setsockopt(socket.SOL_SOCKET, 35, 1)
with open("/run/metrolab-pin.ready", "w") as f:
    f.write("netstamp udp_encap udpv6_encap\n")
signal.pause()'
