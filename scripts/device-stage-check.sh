#!/usr/bin/env bash
# Proof, on this machine, that the stage made by scripts/device-stage.sh starts without the
# system's OpenMPI, PMIx and HDF5 (the GPU machine has none of them): in a private mount
# namespace (root) every such library file is replaced by an empty one and their plugin
# directories by empty ones, then the staged moe trains configs/tiny.yaml for two steps on
# the sim device (MPI singleton init, HDF5 checkpoint write) with device-check.sh's
# environment. The CUDA libraries stay visible: this machine has them only in /usr/local/cuda.
# Mounts only, nothing on disk changes (ldconfig in here would delete the hidden libraries'
# symlinks for good). Usage: scripts/device-stage.sh && unshare -m scripts/device-stage-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d device-stage ] || { echo "run scripts/device-stage.sh first" >&2; exit 1; }
lib=/usr/lib/x86_64-linux-gnu
for f in "$lib"/libmpi*.so* "$lib"/libopen-*.so* "$lib"/libhdf5*.so* "$lib"/libpmix*.so* "$lib"/libhwloc*.so*; do
  [ -e "$f" ] && mount --bind /dev/null "$f"
done
for d in "$lib/openmpi" "$lib/pmix2" /usr/share/openmpi; do [ -d "$d" ] && mount -t tmpfs none "$d"; done
export OPAL_PREFIX="$PWD/device-stage/mpi" PMIX_MCA_mca_base_component_path="$PWD/device-stage/mpi/lib/x86_64-linux-gnu/pmix2/lib/pmix"
export OMPI_MCA_plm=isolated OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export LD_LIBRARY_PATH="$PWD/device-stage/lib:/usr/local/cuda/lib64"
if ldd device-stage/bin/moe | grep -E "not found|$lib/lib(mpi|hdf5|open-pal|pmix)"; then
  echo "the staged moe still resolves a system library (above)" >&2; exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
device-stage/bin/moe train configs/tiny.yaml --set train.steps=2 --set device=sim --set train.eval_every=0 \
  --set checkpoint.dir="$work/ckpt" > "$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
grep -E "training loss|^checkpoint" "$work/log"
echo "device-stage-check: the stage starts with the system's MPI, PMIx and HDF5 hidden"
