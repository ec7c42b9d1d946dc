#!/bin/sh
# Refuses the rollout unless both canary servers answer.
for port in {{c0}} {{c1}}; do
  curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:$port/healthz || { echo "canary server 127.0.0.1:$port does not answer /healthz" >&2; exit 1; }
done
