"""In-order delivery across a lab's veths.

A veth hands a packet to its peer with netif_rx, onto the input backlog of whichever CPU runs the
sender. Behind a shaped egress that CPU changes from packet to packet (the qdisc is run by its
watchdog timer or by the next enqueue, on any CPU), and two backlogs drain independently: packets
leave the shaper in order and can reach the next namespace swapped (captured along a path, issue
19's note). TCP absorbs that; an RC QP takes every swap for a loss (a NAK, then Go-Back-N).

Receive packet steering takes the choice from the sender: with `rps_cpus` set on the receiving
veth's queue, netif_rx queues each packet on the backlog of a CPU from that mask, picked by the
packet's flow hash, so every packet of a flow goes through one backlog, in order, whichever CPU
sent it. Flows still spread over the mask's CPUs.

The first fix, receiving through NAPI (GRO on, TSO off, gro_max_size 1 byte), kept order too but
cost the TCG guest's TCP 3-4x of its capacity (125-374 against 474-817 Mbit/s, issue 30's note);
steering costs none measurable. Every lab delivers so by default (`NetnsLab(in_order=False)` for
the kernel's own delivery). The masks live in the lab's namespaces and go with them.
"""

from __future__ import annotations

import os
import shlex

from metrolab.harness.kernel import sh


def all_cpus_mask(n: int | None = None) -> str:
    """The rps_cpus mask of CPUs 0..n-1 (this machine's, by default), in sysfs's hex."""
    return format((1 << (n or os.cpu_count() or 1)) - 1, "x")


def steer(targets: dict[str, list[str]], mask: str | None = None) -> dict[str, dict[str, list[str]]]:
    """Every receive queue of these interfaces ({namespace: interfaces}) steered to the CPUs of
    `mask` (all by default); returns each namespace's interfaces' masks as the kernel reads them
    back, which a caller can check. Through `ip netns exec`, which mounts the namespace's own /sys
    (entering the namespace alone, sh.run's netns, would still show the host's interfaces there),
    every namespace from one shell: a process per namespace cost a 12-node lab 5 s under TCG."""
    mask = mask or all_cpus_mask()
    inner = ("set -e; ns=$1; shift; for i in \"$@\"; do for q in /sys/class/net/$i/queues/rx-*; do "
             "echo " + mask + " > $q/rps_cpus; echo \"$ns $i $(cat $q/rps_cpus)\"; done; done")
    script = "set -e\n" + "".join(f"ip netns exec {shlex.join([ns, 'sh', '-c', inner, 'sh', ns, *ifnames])}\n"
                                   for ns, ifnames in targets.items())
    out: dict[str, dict[str, list[str]]] = {ns: {i: [] for i in ifnames} for ns, ifnames in targets.items()}
    for line in sh.run(["sh", "-c", script]).stdout.splitlines():
        ns, ifname, got = line.split()
        out[ns][ifname].append(got)
    return out
