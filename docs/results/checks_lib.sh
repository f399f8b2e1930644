# Shared by the per-check scripts of docs/results/*/checks.sh (sourced, from the repository root). Needs $sweep
# (the sweep directory) and $out (where verdicts/ and the plots go).
mkdir -p "$out/verdicts"
# sel KEY=VALUE ...: the run files of the points whose axes have all these values (as written in the manifest)
sel() { jobs/spry-sweep files "$sweep" "$@"; }
check() {  # check NAME VERB FILES...: the verb's full output, then its exit status, in $out/verdicts/NAME.txt
  local name=$1 verb=$2
  shift 2
  analysis/spry-analyze theory "$verb" "$@" --plot "$out/$name.png" > "$out/verdicts/$name.txt"
  local rc=$?
  echo "exit status $rc" >> "$out/verdicts/$name.txt"
  echo "$name: $verb on $# runs: exit $rc"
}
