#!/usr/bin/env bash
# canaryd end to end on a real cluster: installs Envoy Gateway (a Gateway API
# implementation), a Prometheus and canaryd (deploy/), then releases a bad canary
# (rolled back) and a good one (promoted), printing the reasons.
#
# Not run by canaryd's CI (no cluster there): the tests use a fake API server instead
# (docs/kubernetes.md, "How this is tested"). Needs docker, kind and kubectl. With an
# existing cluster, set KIND_CLUSTER= (empty) and push the image yourself.
#
#   deploy/e2e/run.sh            # creates kind cluster canaryd-e2e
#   KIND_CLUSTER= deploy/e2e/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster="${KIND_CLUSTER-canaryd-e2e}"
envoy_gateway="${ENVOY_GATEWAY_VERSION:-v1.2.6}"

step() { printf '\n== %s\n' "$*"; }
wait_phase() {  # wait_phase PHASE: until the CanaryRun web reaches it (20 minutes)
  for _ in $(seq 240); do
    phase=$(kubectl -n shop get canaryrun web -o jsonpath='{.status.phase}' 2>/dev/null || true)
    [ "$phase" = "$1" ] && return 0
    sleep 5
  done
  echo "CanaryRun web did not reach $1 (last: ${phase:-none})" >&2
  kubectl -n canaryd logs deploy/canaryd --tail=50 >&2 || true
  return 1
}

step "image"
docker build -f deploy/e2e/Dockerfile -t canaryd:e2e .
if [ -n "$cluster" ]; then
  kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster"
  kind load docker-image canaryd:e2e --name "$cluster"
fi

step "Envoy Gateway $envoy_gateway (Gateway API CRDs and controller)"
kubectl apply --server-side -f "https://github.com/envoyproxy/gateway/releases/download/$envoy_gateway/install.yaml"
kubectl -n envoy-gateway-system wait --for=condition=Available deploy/envoy-gateway --timeout=5m
kubectl apply -f - <<'YAML'
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
YAML

step "Prometheus"
kubectl apply -f deploy/e2e/prometheus.yaml
kubectl -n monitoring rollout status deploy/prometheus --timeout=5m

step "canaryd (deploy/, two replicas electing a leader)"
kubectl create namespace canaryd --dry-run=client -o yaml | kubectl apply -f -
kubectl -n canaryd create secret generic canaryd-api --from-literal=token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -k deploy/
kubectl -n canaryd set image deploy/canaryd canaryd=canaryd:e2e
kubectl -n canaryd rollout status deploy/canaryd --timeout=5m
kubectl -n canaryd get lease canaryd

step "the workload and its policy"
kubectl apply -f deploy/e2e/app.yaml
kubectl -n shop rollout status deploy/web --timeout=5m
kubectl -n shop wait --for=condition=Available deploy/web-primary --timeout=5m
gateway=$(kubectl -n envoy-gateway-system get svc -l gateway.envoyproxy.io/owning-gateway-name=public -o name | head -1)
kubectl -n envoy-gateway-system port-forward "$gateway" 18080:80 >/dev/null 2>&1 &
forward=$!
trap 'kill $forward 2>/dev/null || true' EXIT
sleep 3
# Load through the Gateway, so that both arms have traffic to judge.
( while true; do curl -s -o /dev/null http://127.0.0.1:18080/ || true; done ) &
load=$!
trap 'kill $forward $load 2>/dev/null || true' EXIT

step "a bad canary (5% errors): rolled back"
kubectl -n shop patch deploy web --type=json -p '[{"op":"replace","path":"/spec/template/spec/containers/0/args","value":["--listen","0.0.0.0:8080","--version","v2","--error-rate","0.05"]}]'
wait_phase RolledBack
kubectl -n shop get canaryrun web
kubectl -n shop get canaryrun web -o jsonpath='{.status.reason}{"\n"}'

step "a good canary: promoted through 10, 50, 100"
kubectl -n shop patch deploy web --type=json -p '[{"op":"replace","path":"/spec/template/spec/containers/0/args","value":["--listen","0.0.0.0:8080","--version","v3","--error-rate","0"]}]'
wait_phase Succeeded
kubectl -n shop get canaryrun web
kubectl -n shop get events --field-selector involvedObject.name=web --sort-by=.lastTimestamp | tail -8
echo "done: the bad canary was rolled back and the good one promoted"
