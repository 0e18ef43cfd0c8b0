#!/bin/sh
# nginx.Containerfile's command: nginx.conf as it is, or with its listen address
# (NGINX_LISTEN) and upstream servers (NGINX_UPSTREAMS, space-separated host:port)
# replaced, for a stack on the host's network (compose.host.yaml).
set -eu
conf=/etc/nginx/nginx.conf
if [ -n "${NGINX_LISTEN:-}${NGINX_UPSTREAMS:-}" ]; then
    servers=""
    for s in ${NGINX_UPSTREAMS:-}; do servers="$servers        server $s max_fails=1 fail_timeout=10s;\n"; done
    awk -v listen="${NGINX_LISTEN:-}" -v servers="$servers" '
        /^ *server replica[0-9]+:/ { if (servers != "") { if (!done) printf "%s", servers; done = 1; next } }
        /^ *listen 8080;/ && listen != "" { sub(/8080/, listen) }
        { print }' "$conf" > /tmp/nginx.conf
    conf=/tmp/nginx.conf
fi
exec nginx -c "$conf" -g "daemon off;"
