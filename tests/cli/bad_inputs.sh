#!/usr/bin/env bash
# bad_inputs.sh MOE SOURCE_DIR NAME [NP]: runs case NAME of bad_inputs.txt through
# expect_failure.sh (non-zero exit, exactly one "moe: ..." line on stderr, matching the case's
# regex). With NP, under mpirun -np NP (scripts/mpi-env.sh's settings), held to the whole
# contract: exit code 2, no signal, and the one line is all of stderr (no line per rank, no
# Open MPI banner). Either way no file outside the command's own outputs (data.dir,
# checkpoint.dir, export's target) changed: every other regular file of the scratch directory
# and of configs/ is still there with the same bytes, and none appeared beside them.
set -u
moe=$1 src=$2 name=$3 np=${4:-}
dir=bad_inputs_scratch/$name${np:+_np$np}  # each case its own: cases run at once would rewrite shared files
mkdir -p "$dir/emptyrun"
printf 'model:\n  d_model: [1, 2\n' > "$dir/broken.yaml"
printf 'not hdf5\n' > "$dir/notckpt.h5"
printf 'checkpoint:\n  dir:\n' > "$dir/nulldir.yaml"
[ -p "$dir/fifo" ] || mkfifo "$dir/fifo"
printf 'caf\xe9 au lait\n' > "$dir/latin1.txt"  # Latin-1, not UTF-8
mkdir -p "$dir/wordpiece" "$dir/no_eos"          # tokenizer.json files moe does not read
printf '{"model": {"type": "WordPiece", "vocab": {}}, "pre_tokenizer": {"type": "ByteLevel"}}' > "$dir/wordpiece/tokenizer.json"
printf '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "ByteLevel"}}' > "$dir/no_eos/tokenizer.json"
line=$(grep -P "^$name\t" "$src/tests/cli/bad_inputs.txt") || { echo "no case $name"; exit 1; }
regex=$(printf '%s' "$line" | cut -f2)
args=$(printf '%s' "$line" | cut -f3 | sed -e "s|@TINY@|$src/configs/tiny.yaml|g" -e "s|@DSV3@|$src/configs/deepseek-v3.yaml|g" -e "s|@DIR@|$dir|g" -e "s|@SRC@|$src|g")
# Every file with its checksum, sorted: the scratch directory and the shipped configs.
snapshot() { find "$dir" "$src/configs" -type f -print0 | sort -z | xargs -0 -r md5sum; }
# The command's own outputs: the directories it was told to write, and export's target.
outputs=$(printf '%s\n' $args | sed -n -e 's/^data\.dir=//p' -e 's/^checkpoint\.dir=//p')
[ "${args%% *}" = export ] && outputs="$outputs $(printf '%s\n' $args | sed -n 3p)"
before=$(snapshot)
untouched() {
  local changed path out
  changed=$(diff <(printf '%s\n' "$before") <(printf '%s\n' "$snapshot_after") | sed -n 's/^[<>] [0-9a-f]*  //p' | sort -u)
  for path in $changed; do
    for out in $outputs; do
      case "$path" in "$out" | "$out"/*) continue 2 ;; esac
    done
    echo "FAIL: changed outside the command's outputs ($outputs): $path"
    return 1
  done
}
if [ -n "$np" ]; then
  source "$src/scripts/mpi-env.sh"
  # shellcheck disable=SC2086  # ARGS are split on spaces by design
  err=$(mpirun -np "$np" "$moe" $args 2>&1 >/dev/null); rc=$?
  echo "mpirun -np $np: exit $rc; stderr: $err"
  [ "$rc" -eq 2 ] || { echo "FAIL: expected exit 2"; exit 1; }
  [ "$(printf '%s\n' "$err" | grep -c .)" -eq 1 ] || { echo "FAIL: expected one line on stderr"; exit 1; }
  printf '%s\n' "$err" | grep -Eq -- "^moe: error( on rank [0-9]+)?: .*$regex" || { echo "FAIL: stderr does not match: $regex"; exit 1; }
  snapshot_after=$(snapshot) untouched
  exit
fi
# shellcheck disable=SC2086  # ARGS are split on spaces by design
"$src/tests/cli/expect_failure.sh" "^moe: error( on rank [0-9]+)?: .*$regex" "$moe" $args || exit 1
snapshot_after=$(snapshot) untouched
