# shellcheck shell=bash
# Sourced by the shell test scripts: the "ok - / FAIL - / skip -" lines and
# the counts for their closing "N passed, N failed, N skipped" line.
passed=0
failed=0
skipped=0
indent() { sed "s/^/    /"; }
result() { # name status
    if [ "$2" -eq 0 ]; then
        passed=$((passed + 1)); echo "ok   - $1"
    else
        failed=$((failed + 1)); echo "FAIL - $1"
    fi
}
skip() { # name reason
    skipped=$((skipped + 1)); echo "skip - $1: $2"
}
