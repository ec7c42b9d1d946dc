#!/bin/sh
# Brings the stable servers to the canary's revision: each is restarted with the
# canary's flags (kept in canary.args by the demo), one after the other.
set -e
args=$(cat {{d}}/canary.args)
{{stop}}for port in {{s0}} {{s1}}; do
  sh {{d}}/app.sh stable $port $args
done
