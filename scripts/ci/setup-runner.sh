#!/usr/bin/env bash
# Prepare a GitHub-hosted runner for metrolab, as root:
#   - KVM for the vm backend: hosted x64 runners expose /dev/kvm as root:kvm 0660; a udev rule opens it;
#   - sch_netem for the lab tier on the runner's own kernel (the Azure kernel ships it as a module);
#   - with --rxe=host, Soft-RoCE in the runner's kernel: rdma_rxe from the distribution where it is
#     packaged, else built out of tree from the running kernel's source package; the runner's own RDMA
#     drivers (mana_ib, mlx5_ib) unloaded so rdma_cm does not resolve onto the runner's NIC.
# --dry-run prints every command instead of running it (what the test suite runs on machines that are
# not runners). Exit 2 on a bad option.
set -euo pipefail
DRY=0
RXE=vm
for arg in "$@"; do
  case $arg in
    --dry-run) DRY=1 ;;
    --rxe=vm|--rxe=host) RXE=${arg#--rxe=} ;;
    *) echo "setup-runner.sh: unknown option '$arg' (use --dry-run, --rxe=vm|host)" >&2; exit 2 ;;
  esac
done
KREL=$(uname -r)

run() {
  if ((DRY)); then printf '+ %s\n' "$*"; else "$@"; fi
}
write() {  # write FILE CONTENT
  if ((DRY)); then printf '+ write %s <<< %s\n' "$1" "$2"; else printf '%s\n' "$2" > "$1"; fi
}

echo "setup-runner: kernel $KREL, Soft-RoCE path: $RXE$( ((DRY)) && echo ' (dry run: nothing is changed)')"

if [ -e /dev/kvm ] || ((DRY)); then
  write /etc/udev/rules.d/99-metrolab-kvm.rules 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"'
  run udevadm control --reload-rules
  run udevadm trigger --name-match=kvm
else
  echo "setup-runner: no /dev/kvm: the vm backend will run under TCG (slow)"
fi

run modprobe sch_netem

if [ "$RXE" = host ]; then
  if ((DRY)) || ! modinfo rdma_rxe >/dev/null 2>&1; then
    # not packaged for this kernel (recent Azure kernels): build it from the kernel's own source
    run apt-get install -y -qq --no-install-recommends dpkg-dev "linux-headers-$KREL"
    run sed -i 's/^Types: deb$/Types: deb deb-src/' /etc/apt/sources.list.d/ubuntu.sources
    run apt-get update -qq
    BUILD=$(mktemp -d /tmp/rxe-build-XXXX)
    run bash -c "cd $BUILD && apt-get source -qq linux-modules-$KREL || apt-get source -qq linux"
    run bash -c "make -C /lib/modules/$KREL/build M=\$(ls -d $BUILD/linux-*/)drivers/infiniband/sw/rxe modules"
    run bash -c "install -D -m 0644 $BUILD/linux-*/drivers/infiniband/sw/rxe/rdma_rxe.ko /lib/modules/$KREL/extra/rdma_rxe.ko"
    run depmod -a
  fi
  for m in mana_ib mlx5_ib; do
    if ((DRY)) || lsmod | grep -q "^$m "; then run modprobe -r "$m"; fi
  done
  run modprobe rdma_rxe
  run modprobe rdma_ucm
fi
echo "setup-runner: done"
