# Sourced by .ci/run and .ci/in-root.sh: `timed NAME CMD...` runs CMD and records how long it took
# in $CI_TIMES ("seconds<TAB>name<TAB>exit code"); `print_times FILE...` prints the table.
CI_TIMES=${CI_TIMES:-/tmp/kvm-clone-ci-times}

timed() {
    local name=$1 start rc=0
    shift
    start=$(date +%s)
    echo "::: $name"
    "$@" || rc=$?
    printf '%s\t%s\t%s\n' "$(($(date +%s) - start))" "$name" "$rc" >>"$CI_TIMES"
    echo "::: $name: $(($(date +%s) - start)) s (exit $rc)"
    return "$rc"
}

print_times() {
    echo
    echo "Time per step (seconds, exit code):"
    cat "$@" 2>/dev/null | awk -F'\t' '{printf "  %6d s  %-62s %s\n", $1, $2, ($3 == 0 ? "ok" : "FAILED (" $3 ")"); t += $1}
        END {printf "  %6d s  in all\n", t}'
}
