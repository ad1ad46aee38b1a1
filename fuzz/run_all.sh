#!/usr/bin/env bash
# Runs every fuzz target in turn for SECS seconds each (default 600), one process at a time,
# from the committed seeds plus whatever corpus is already there. Logs go to fuzz/logs/.
set -u
cd "$(dirname "$0")"
SECS="${SECS:-600}"
TOOLCHAIN="${TOOLCHAIN-+nightly}"  # TOOLCHAIN= (empty): the default toolchain
mkdir -p logs
./seed.sh
for t in ${TARGETS:-request_head chunked response_head config}; do
    dict=http.dict
    [ "$t" = config ] && dict=config.dict
    echo "== $t start $(date -u +%FT%TZ)" >> logs/summary.txt
    cargo $TOOLCHAIN fuzz run -a "$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 \
        -dict="$dict" -print_final_stats=1 > "logs/$t.log" 2>&1
    echo "== $t exit $? end $(date -u +%FT%TZ)" >> logs/summary.txt
done
