#!/usr/bin/env bash
# bad_input.sh CASE FIXTURE_DIR REGEX MOE_TRAIN...: copies a run directory holding a good
# checkpoint, damages the copy as CASE says, resumes from it with MOE_TRAIN, and passes when
# the run fails loud (tests/cli/expect_failure.sh: non-zero exit, one moe line matching
# REGEX) and nothing in the copy was overwritten.
#   flip       a byte inside the data of weights/lm_head.weight
#   truncate   the checkpoint file cut to 60%
#   shape      no damage: MOE_TRAIN asks for another model shape
#   tokenizer  no damage: MOE_TRAIN's data.dir has another tokenizer of the same vocabulary size
#   nowhere    `latest` names a file that does not exist
set -u
case=$1 fixture=$2 regex=$3; shift 3
here=$(dirname "$0")
dir=bad_$case
rm -rf "$dir" && cp -r "$fixture" "$dir" || exit 1
file=$dir/$(head -n1 "$dir/latest")
case $case in
  flip) /usr/bin/python3 "$here/damage.py" flip "$file" weights/lm_head.weight || exit 1 ;;
  truncate) truncate -s $(( $(stat -c %s "$file") * 6 / 10 )) "$file" ;;
  shape | tokenizer) ;;
  nowhere) echo step_00000099.h5 > "$dir/latest" ;;
  *) echo "unknown case $case"; exit 1 ;;
esac
before=$(cd "$dir" && ls -l --time-style=+%s.%N && md5sum ./*)
"$here/../cli/expect_failure.sh" "$regex" "$@" --set checkpoint.dir="$dir" || exit 1
after=$(cd "$dir" && ls -l --time-style=+%s.%N && md5sum ./*)
[ "$before" = "$after" ] || { echo "FAIL: the run directory changed:"; diff <(echo "$before") <(echo "$after"); exit 1; }
echo "ok: $case"
