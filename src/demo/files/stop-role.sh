for port in {{p0}} {{p1}}; do
  [ -f {{d}}/{{role}}-$port.pid ] && kill -KILL "$(cat {{d}}/{{role}}-$port.pid)" 2>/dev/null
  rm -f {{d}}/{{role}}-$port.pid
  # Wait until the port is closed: the server is gone.
  i=0; while curl -s -o /dev/null http://127.0.0.1:$port/healthz && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
done
