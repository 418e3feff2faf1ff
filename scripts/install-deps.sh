#!/usr/bin/env bash
# Installs every Debian package that moe's build, run and tests need; skips what is present.
# Idempotent: a second run installs nothing and takes a second.
# Usage: scripts/install-deps.sh            (as root, or with sudo available)
set -euo pipefail

# Build toolchain and libraries (see CMakeLists.txt for what each is used for).
PKGS=(
  g++ cmake ninja-build pkg-config git
  openmpi-bin libopenmpi-dev           # MPI: the CPU communicator and mpirun
  libhdf5-openmpi-dev                  # parallel HDF5: layout-free checkpoints
  libyaml-cpp-dev                      # configs
  catch2                               # tests (Catch2 2.x)
  libopenblas-openmp-dev               # CPU GEMM; OpenMP flavour so it nests with our loops
  libsentencepiece-dev sentencepiece   # tokenizer
  libcli11-dev                         # the moe command line
  libfmt-dev libspdlog-dev             # formatting and logs
  nlohmann-json3-dev                   # JSON metrics and reports
  libxxhash-dev                        # content hashes (data dedup, checksums)
  fortunes fortunes-min                # the embedded default corpus (fortune databases)
  python3 python3-numpy python3-torch  # /usr/bin/python3: the PyTorch oracle and benchmark peer
  python3-h5py                         # checkpoints read by h5py alone (a test)
)

missing=()
for p in "${PKGS[@]}"; do
  # dpkg-query prints "install ok installed" only for a fully installed package.
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
