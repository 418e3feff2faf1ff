#!/usr/bin/env bash
# Installs every Debian package that moe's build, run and tests need; skips what is present.
# Idempotent: a second run installs nothing and takes a second.
# Usage: scripts/install-deps.sh            (as root, or with sudo available)
#        scripts/install-deps.sh --test     also the test-only Hugging Face environment: PyTorch
#                                           and transformers from PyPI in deps/hf-venv (~5 GB;
#                                           Debian's torch 1.13 is too old for transformers)
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST=0
[ "${1:-}" = "--test" ] && WITH_TEST=1

# Build toolchain and libraries (see CMakeLists.txt for what each is used for).
PKGS=(
  g++ cmake ninja-build pkg-config git
  clang-format                         # the house style (.clang-format; ctest repo.format)
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
  libsimdjson-dev zlib1g-dev libzstd-dev  # JSONL corpora, .gz and .zst compressed
  libfasttext-dev                      # the quality classifier (data.quality_model / quality_train)
  libicu-dev                           # tokenizer.json: its pre-tokenizer regexes (\p{L}, look-ahead) and NFC
  fortunes fortunes-min                # the embedded default corpus (fortune databases)
  python3 python3-numpy python3-torch  # /usr/bin/python3: the PyTorch oracle and benchmark peer
  python3-h5py                         # checkpoints read by h5py alone (a test)
  python3-matplotlib                   # scripts/plot.py
  python3-pip                          # the PyPI packages below, into /usr/bin/python3
  python3-venv                         # deps/hf-venv (--test)
)
# From PyPI (Debian 12 packages neither), for tests that read our files with the real readers.
PIP_PKGS=(
  safetensors                          # moe export --format safetensors, read back by a test
  tensorboard                          # TensorBoard event files, read back by a test
)

missing=()
for p in "${PKGS[@]}"; do
  # dpkg-query prints "install ok installed" only for a fully installed package.
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
need_root() {
  [ -z "$SUDO" ] || command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: $*" >&2; exit 1; }
}

if [ ${#missing[@]} -gt 0 ]; then
  need_root "${missing[@]}"
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

missing_pip=()
for p in "${PIP_PKGS[@]}"; do
  /usr/bin/python3 -c "import $p" 2>/dev/null || missing_pip+=("$p")
done
if [ ${#missing_pip[@]} -gt 0 ]; then
  need_root "${missing_pip[@]}"
  echo "install-deps: installing from PyPI ${missing_pip[*]}"
  # Debian marks its Python as externally managed; these go to /usr/local, beside it.
  $SUDO /usr/bin/python3 -m pip install -q --root-user-action=ignore --no-warn-script-location --break-system-packages "${missing_pip[@]}" >/dev/null
fi
# Apache Arrow's C++ libraries for Parquet corpora (data/parquet.cpp): Debian 12 has none, the
# pyarrow wheel ships libarrow, libparquet and their headers. Unpacked whole into deps/arrow,
# the project's (its Python module also writes the Parquet files of a test: PYTHONPATH).
ARROW=26.0.1
if [ ! -f deps/arrow/VERSION ] || [ "$(cat deps/arrow/VERSION)" != "$ARROW" ]; then
  tmp=$(mktemp -d)
  echo "install-deps: fetching Apache Arrow $ARROW (the pyarrow wheel) into deps/arrow"
  if /usr/bin/python3 -m pip download -q --no-deps --only-binary=:all: "pyarrow==$ARROW" -d "$tmp" >/dev/null 2>&1; then
    rm -rf deps/arrow && mkdir -p deps/arrow
    /usr/bin/python3 -c "import glob, sys, zipfile; zipfile.ZipFile(glob.glob(sys.argv[1] + '/*.whl')[0]).extractall('deps/arrow')" "$tmp"
    echo "$ARROW" > deps/arrow/VERSION
  else
    echo "install-deps: could not fetch pyarrow $ARROW; moe builds without Parquet corpora" >&2
  fi
  rm -rf "$tmp"
fi
# minja (google/minja, MIT, header-only): Jinja chat templates as transformers renders them
# (data/jinja_chat.cpp). Neither Debian nor PyPI ships it alone; llama.cpp vendors it, and the
# llama-cpp-python source archive on PyPI carries that copy: its two headers into deps/minja.
MINJA_FROM=llama_cpp_python-0.3.16
MINJA_URL=https://files.pythonhosted.org/packages/e4/b4/c8cd17629ced0b9644a71d399a91145aedef109c0333443bef015e45b704/$MINJA_FROM.tar.gz
MINJA_SHA256=34ed0f9bd9431af045bb63d9324ae620ad0536653740e9bb163a2e1fcb973be6
if [ ! -f deps/minja/VERSION ] || [ "$(cat deps/minja/VERSION)" != "$MINJA_FROM" ]; then
  echo "install-deps: fetching minja (from $MINJA_FROM's sources) into deps/minja"
  if ! /usr/bin/python3 - "$MINJA_URL" "$MINJA_SHA256" "$MINJA_FROM" <<'PY'
import hashlib, io, os, sys, tarfile, urllib.request
url, sha, name = sys.argv[1:4]
data = urllib.request.urlopen(url, timeout=180).read()
if hashlib.sha256(data).hexdigest() != sha:
    sys.exit("sha256 mismatch")
os.makedirs("deps/minja/minja", exist_ok=True)
with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    for header in ("minja.hpp", "chat-template.hpp"):
        src = tar.extractfile(f"{name}/vendor/llama.cpp/vendor/minja/{header}")
        open(f"deps/minja/minja/{header}", "wb").write(src.read())
open("deps/minja/VERSION", "w").write(name + "\n")
PY
  then
    rm -rf deps/minja
    echo "install-deps: could not fetch minja; moe builds without Jinja chat templates" >&2
  fi
fi
# cuDNN's C++ frontend (header-only; the fused attention of kernels/cuda/sdpa.cpp) where CUDA
# builds: its headers from the PyPI wheel into deps/ (the project's, not a system path).
CUDNN_FE=1.32.0
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  if [ ! -f deps/cudnn_frontend/VERSION ] || [ "$(cat deps/cudnn_frontend/VERSION)" != "$CUDNN_FE" ]; then
    tmp=$(mktemp -d)
    if /usr/bin/python3 -m pip download -q --no-deps --only-binary=:all: "nvidia-cudnn-frontend==$CUDNN_FE" -d "$tmp" >/dev/null 2>&1; then
      rm -rf deps/cudnn_frontend && mkdir -p deps/cudnn_frontend
      /usr/bin/python3 - "$tmp" <<'PY'
import glob, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
wheel.extractall("deps/cudnn_frontend", [n for n in wheel.namelist() if n.startswith("include/")])
PY
      echo "$CUDNN_FE" > deps/cudnn_frontend/VERSION
    else
      echo "install-deps: could not fetch nvidia-cudnn-frontend $CUDNN_FE; GPU attention falls back to cuBLASLt + softmax" >&2
    fi
    rm -rf "$tmp"
  fi
fi
# The test-only oracle: transformers' own model classes (tests/model/hf_check.py), pinned.
# sentencepiece and protobuf: transformers' LlamaTokenizer and its fast conversion read the
# exported tokenizer.model. peft: HF PEFT loads moe export --lora peft's adapters.
HF_PKGS=(torch==2.5.1 transformers==4.57.1 numpy sentencepiece==0.2.0 protobuf==5.28.3 peft==0.17.1)
if [ "$WITH_TEST" = 1 ]; then
  if ! deps/hf-venv/bin/python -c "import torch, transformers, sentencepiece, google.protobuf, peft
assert transformers.__version__ == '4.57.1'" 2>/dev/null; then
    echo "install-deps: installing into deps/hf-venv ${HF_PKGS[*]} (from PyPI)"
    [ -x deps/hf-venv/bin/pip ] || /usr/bin/python3 -m venv deps/hf-venv
    deps/hf-venv/bin/pip install -q --disable-pip-version-check "${HF_PKGS[@]}" >/dev/null
  fi
fi
echo "install-deps: all ${#PKGS[@]} Debian and ${#PIP_PKGS[@]} PyPI packages present$([ "$WITH_TEST" = 1 ] && echo ", and deps/hf-venv")"
