#!/bin/sh
# app.sh ROLE PORT ARGS...: starts a demo server in the background, its pid in ROLE-PORT.pid.
role=$1; port=$2; shift 2
nohup {{app}} --listen 127.0.0.1:$port "$@" >/dev/null 2>&1 &
echo $! > {{d}}/$role-$port.pid
