#!/bin/bash
# A second call on the same warm machine: the stopped protocol rerun goes on until the
# deadline ($1 seconds), then its rows, tables and log come back.
set -u
END=$(($(date +%s) + ${1:-200}))
P=$(cat /tmp/p5.pid)
kill -CONT -- -$P
while kill -0 $P 2>/dev/null && [ $(date +%s) -lt $END ]; do sleep 2; done
kill -STOP -- -$P 2>/dev/null
cp /tmp/p5/rows.jsonl /tmp/p5/results.md /tmp/gc/protocol.log "$OUT/" 2>/dev/null
tail -5 /tmp/gc/protocol.log
