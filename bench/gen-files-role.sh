#!/usr/bin/env bash
# Writes a state repository of one host and one role that manages 100 files, for
# benchmarking `infra-agent --once` on a host already in sync (bench/once-in-sync.sh).
#
#   bench/gen-files-role.sh OUTDIR ROOT
#
# OUTDIR: the repository to write (must not exist, or be empty).
# ROOT:   the absolute directory the role manages; written as `root` in
#         group_data/all.toml. Every path of the role is under {{data.root}}.
#
# The repository: inventory/production.toml with one host, bench-01, whose `all` group
# runs the role `app`. roles/app.toml has 108 steps, as `check` and `--once` count them:
#   -  8 `directory` steps first: ROOT and 7 directories under it (added to the 100);
#   - 60 `file` steps with inline content that uses {{data...}}, {{host...}} and helpers;
#   - 30 `template` steps: 4 `for_each` steps over data tables (8 sites, 8 services,
#     7 checks, 7 timers), one instance per element, from 4 templates under templates/;
#   - 10 `file` steps with a `source` under files/ (scripts, a CA bundle, static pages,
#     one small binary file).
# Every file step sets mode, owner = "root" and group = "root", and `requires` its
# directory. Together the 100 files hold about 65 KiB.
#
# The output depends only on the arguments (no dates, no randomness). Bash + coreutils.

set -euo pipefail
export LC_ALL=C

usage() {
    echo "usage: $0 OUTDIR ROOT" >&2
    exit 2
}
[[ $# -eq 2 ]] || usage
OUT=$1
ROOT=$2
[[ $ROOT == /* ]] || usage
case $ROOT in *[\"\\\']*) echo "$0: ROOT must not contain quotes or backslashes" >&2 && exit 2 ;; esac

if [[ -e $OUT && -n $(ls -A "$OUT" 2>/dev/null) ]]; then
    echo "$0: $OUT exists and is not empty" >&2
    exit 1
fi
mkdir -p "$OUT"/{inventory,group_data,roles,templates,files/srv}

# ---------------------------------------------------------------------------------------
# infra.toml, inventory, data
# ---------------------------------------------------------------------------------------

cat >"$OUT/infra.toml" <<'EOF'
# Synthetic repository for benchmarking `infra-agent --once` (bench/gen-files-role.sh).
format = 1
min_agent_version = "0.1.0"
EOF

cat >"$OUT/inventory/production.toml" <<'EOF'
# One host. host.env = "production".
[groups.all]
roles = ["app"]

[groups.bench]
hosts = ["bench-01"]
EOF

cat >"$OUT/group_data/all.toml" <<EOF
# Everything the role writes lives under root (a scratch directory of the benchmark).
root = "$ROOT"
timezone = "Etc/UTC"
domain = "example.internal"
EOF
cat >>"$OUT/group_data/all.toml" <<'EOF'

[app]
name = "orchard"
version = "4.12.3"
bind = "127.0.0.1"
base_port = 8100
log_level = "info"
cluster = "orchard-fra"
workers = 8
data_dir = "/var/lib/orchard"
admin_email = "ops@example.internal"
features = ["search", "thumbnails", "webhooks", "sso"]
upstreams = ["10.0.2.11:8100", "10.0.2.12:8100", "10.0.2.13:8100"]

[db]
host = "db.example.internal"
port = 5432
name = "orchard"
user = "orchard"
pool = 20

[cron]
mailto = "cron@example.internal"
path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

[tls]
cert = "/etc/ssl/orchard/fullchain.pem"
key = "/etc/ssl/orchard/privkey.pem"
protocols = ["TLSv1.2", "TLSv1.3"]

[sites.www]
server_name = "www.example.internal"
port = 443
upstream = "orchard-web"
aliases = ["example.internal"]
tls = true

[sites.api]
server_name = "api.example.internal"
port = 443
upstream = "orchard-api"
aliases = []
tls = true
rate_limit = "50r/s"

[sites.admin]
server_name = "admin.example.internal"
port = 443
upstream = "orchard-admin"
aliases = []
tls = true
allow = ["10.0.0.0/16", "192.168.10.0/24"]

[sites.static]
server_name = "static.example.internal"
port = 443
upstream = "orchard-static"
aliases = ["cdn.example.internal", "assets.example.internal"]
tls = true

[sites.hooks]
server_name = "hooks.example.internal"
port = 443
upstream = "orchard-hooks"
aliases = []
tls = true
rate_limit = "10r/s"

[sites.status]
server_name = "status.example.internal"
port = 80
upstream = "orchard-status"
aliases = []
tls = false

[sites.metrics]
server_name = "metrics.example.internal"
port = 80
upstream = "orchard-metrics"
aliases = []
tls = false
allow = ["10.0.0.0/16"]

[sites.legacy]
server_name = "old.example.internal"
port = 80
upstream = "orchard-web"
aliases = ["www.old.example.internal"]
tls = false

[services.web]
exec = "/usr/bin/orchard serve --role web"
after = ["network-online.target", "postgresql.service"]
memory_max = "2G"
restart = "on-failure"

[services.api]
exec = "/usr/bin/orchard serve --role api"
after = ["network-online.target", "postgresql.service"]
memory_max = "1G"
restart = "on-failure"

[services.admin]
exec = "/usr/bin/orchard serve --role admin"
after = ["network-online.target"]
memory_max = "512M"
restart = "on-failure"

[services.worker]
exec = "/usr/bin/orchard work --queues default,mail"
after = ["network-online.target", "redis.service"]
memory_max = "1G"
restart = "always"

[services.scheduler]
exec = "/usr/bin/orchard schedule"
after = ["network-online.target"]
memory_max = "256M"
restart = "always"

[services.hooks]
exec = "/usr/bin/orchard hooks"
after = ["network-online.target"]
memory_max = "256M"
restart = "on-failure"

[services.thumbnailer]
exec = "/usr/bin/orchard thumbnails --concurrency 4"
after = ["network-online.target"]
memory_max = "1G"
restart = "on-failure"

[services.exporter]
exec = "/usr/bin/orchard-exporter --listen 127.0.0.1:9187"
after = ["network-online.target"]
memory_max = "128M"
restart = "always"

[checks.http]
target = "https://www.example.internal/healthz"
interval = "30s"
timeout = "5s"

[checks.api]
target = "https://api.example.internal/v1/ping"
interval = "30s"
timeout = "5s"

[checks.db]
target = "tcp://db.example.internal:5432"
interval = "60s"
timeout = "3s"

[checks.queue]
target = "tcp://127.0.0.1:6379"
interval = "60s"
timeout = "2s"

[checks.disk]
target = "file:///var/lib/orchard"
interval = "5m"
timeout = "10s"

[checks.certs]
target = "tls://www.example.internal:443"
interval = "6h"
timeout = "10s"

[checks.backup]
target = "file:///var/backups/orchard/latest"
interval = "1h"
timeout = "10s"

[timers.backup]
on_calendar = "*-*-* 02:30:00"
command = "/srv/orchard/backup.sh"
persistent = true

[timers.vacuum]
on_calendar = "Sun *-*-* 04:00:00"
command = "/usr/bin/orchard db vacuum"
persistent = true

[timers.reindex]
on_calendar = "*-*-* 03:15:00"
command = "/usr/bin/orchard search reindex"
persistent = false

[timers.prune-sessions]
on_calendar = "hourly"
command = "/usr/bin/orchard sessions prune"
persistent = false

[timers.rotate-keys]
on_calendar = "monthly"
command = "/srv/orchard/rotate-keys.sh"
persistent = true

[timers.sitemap]
on_calendar = "*-*-* 05:00:00"
command = "/usr/bin/orchard sitemap --write /var/lib/orchard/sitemap.xml"
persistent = false

[timers.digest]
on_calendar = "Mon *-*-* 07:00:00"
command = "/usr/bin/orchard mail digest"
persistent = false
EOF

# ---------------------------------------------------------------------------------------
# roles/app.toml
# ---------------------------------------------------------------------------------------

ROLE=$OUT/roles/app.toml
cat >"$ROLE" <<'EOF'
description = "The orchard web application: configuration, units, sites and scripts."
EOF

# directory ID PATH MODE [REQUIRES]
directory() {
    {
        printf '\n[[step]]\nid = "%s"\ntype = "directory"\npath = "%s"\n' "$1" "$2"
        printf 'owner = "root"\ngroup = "root"\nmode = "%s"\n' "$3"
        [[ -n ${4:-} ]] && printf 'requires = ["%s"]\n' "$4"
    } >>"$ROLE"
    return 0
}
directory dir-root '{{data.root}}' 0755
directory dir-etc '{{data.root}}/etc' 0755 dir-root
directory dir-app '{{data.root}}/etc/{{data.app.name}}' 0750 dir-etc
directory dir-conf-d '{{data.root}}/etc/{{data.app.name}}/conf.d' 0750 dir-app
directory dir-sites '{{data.root}}/etc/sites' 0755 dir-etc
directory dir-systemd '{{data.root}}/etc/systemd' 0755 dir-etc
directory dir-cron-d '{{data.root}}/etc/cron.d' 0755 dir-etc
directory dir-srv '{{data.root}}/srv' 0755 dir-root

# inline ID PATH MODE REQUIRES, content on stdin (a TOML multi-line literal string).
inline() {
    {
        printf '\n[[step]]\nid = "%s"\ntype = "file"\npath = "%s"\n' "$1" "$2"
        printf "content = '''\n"
        cat
        printf "'''\n"
        printf 'owner = "root"\ngroup = "root"\nmode = "%s"\nrequires = ["%s"]\n' "$3" "$4"
    } >>"$ROLE"
}

# 30 configuration fragments in conf.d, one per component (inline).
COMPONENTS=(http grpc auth session cache database queue mailer search storage metrics
    tracing logging ratelimit cors csrf uploads thumbnails webhooks scheduler audit billing
    i18n feature-flags sso ldap smtp-relay backup health admin-api)
for i in "${!COMPONENTS[@]}"; do
    c=${COMPONENTS[$i]}
    n=$(printf '%02d' $((i * 2 + 10)))
    inline "conf-$c" "{{data.root}}/etc/{{data.app.name}}/conf.d/$n-$c.conf" 0640 dir-conf-d <<EOF
# Managed by infra-agent (role app) for {{host.name}} ({{host.env}}). Do not edit.
# Component: $c of {{data.app.name}} {{data.app.version}}
[$c]
enabled = true
listen = "{{data.app.bind}}:$((8100 + i))"
log_level = "{{data.app.log_level}}"
cluster = "{{data.app.cluster}}"
data_dir = "{{data.app.data_dir}}/$c"
workers = {{data.app.workers}}
timeout_ms = $((1000 + i * 250))
{{#if (eq host.env "production")}}
strict = true
{{else}}
strict = false
{{/if}}
notify = "{{data.app.admin_email}}"
EOF
done

# 8 top-level configuration files of the application (inline).
inline app-main '{{data.root}}/etc/{{data.app.name}}/main.toml' 0640 dir-app <<'EOF'
# Managed by infra-agent (role app). Do not edit.
name = "{{data.app.name}}"
version = "{{data.app.version}}"
environment = "{{host.env}}"
hostname = "{{host.name}}.{{data.domain}}"
timezone = "{{data.timezone}}"
include = "conf.d/*.conf"
features = [{{#each data.app.features}}"{{this}}"{{#unless @last}}, {{/unless}}{{/each}}]
EOF
inline app-database '{{data.root}}/etc/{{data.app.name}}/database.toml' 0600 dir-app <<'EOF'
# Managed by infra-agent (role app). Do not edit.
[database]
host = "{{data.db.host}}"
port = {{data.db.port}}
name = "{{data.db.name}}"
user = "{{data.db.user}}"
pool_size = {{data.db.pool}}
password_file = "/run/credentials/{{data.app.name}}/db"
sslmode = "verify-full"
EOF
inline app-upstreams '{{data.root}}/etc/{{data.app.name}}/upstreams.conf' 0644 dir-app <<'EOF'
# Managed by infra-agent (role app). Do not edit.
{{#each data.app.upstreams}}
server {{this}} max_fails=3 fail_timeout=10s;
{{/each}}
EOF
inline app-tls '{{data.root}}/etc/{{data.app.name}}/tls.toml' 0640 dir-app <<'EOF'
# Managed by infra-agent (role app). Do not edit.
cert = "{{data.tls.cert}}"
key = "{{data.tls.key}}"
protocols = "{{join data.tls.protocols " "}}"
EOF
inline app-limits '{{data.root}}/etc/{{data.app.name}}/limits.toml' 0644 dir-app <<'EOF'
# Managed by infra-agent (role app). Do not edit.
max_body_size = "64m"
max_connections = 4096
workers = {{data.app.workers}}
queue_depth = 10000
EOF
inline app-logging '{{data.root}}/etc/{{data.app.name}}/logging.toml' 0644 dir-app <<'EOF'
# Managed by infra-agent (role app). Do not edit.
level = "{{data.app.log_level}}"
format = "json"
target = "journald"
fields = { host = "{{host.name}}", env = "{{host.env}}", cluster = "{{data.app.cluster}}" }
EOF
inline app-cluster '{{data.root}}/etc/{{data.app.name}}/cluster.toml' 0644 dir-app <<'EOF'
# Managed by infra-agent (role app). Do not edit.
name = "{{data.app.cluster}}"
node = "{{host.name}}"
groups = "{{join host.groups ","}}"
peers = [{{#each data.app.upstreams}}"{{this}}"{{#unless @last}}, {{/unless}}{{/each}}]
EOF
inline app-version '{{data.root}}/etc/{{data.app.name}}/VERSION' 0644 dir-app <<'EOF'
{{data.app.version}}
EOF

# 10 environment files of the units (inline).
for u in web api admin worker scheduler hooks thumbnailer exporter migrate console; do
    inline "env-$u" "{{data.root}}/etc/systemd/{{data.app.name}}-$u.env" 0600 dir-systemd <<EOF
# Managed by infra-agent (role app). Do not edit.
ORCHARD_ROLE=$u
ORCHARD_ENV={{host.env}}
ORCHARD_CLUSTER={{data.app.cluster}}
ORCHARD_LOG_LEVEL={{data.app.log_level}}
ORCHARD_DB_HOST={{data.db.host}}
ORCHARD_DB_PORT={{data.db.port}}
ORCHARD_DATA_DIR={{data.app.data_dir}}/$u
TZ={{data.timezone}}
EOF
done

# 12 cron jobs (inline).
JOBS=(cleanup-tmp export-stats sync-ldap refresh-cache warm-search mail-queue
    expire-uploads check-certs rotate-logs report-usage fetch-geoip compact-queue)
for i in "${!JOBS[@]}"; do
    j=${JOBS[$i]}
    inline "cron-$j" "{{data.root}}/etc/cron.d/{{data.app.name}}-$j" 0644 dir-cron-d <<EOF
# Managed by infra-agent (role app). Do not edit.
SHELL=/bin/sh
PATH={{data.cron.path}}
MAILTO={{data.cron.mailto}}
$((i * 5 % 60)) $((i % 24)) * * * root /usr/bin/orchard task $j --cluster {{data.app.cluster}} >/dev/null
EOF
done

# for_each_template ID FOR_EACH PATH SOURCE MODE REQUIRES
for_each_template() {
    printf '\n[[step]]\nid = "%s"\ntype = "template"\nfor_each = "%s"\npath = "%s"\nsource = "%s"\n' \
        "$1" "$2" "$3" "$4" >>"$ROLE"
    printf 'owner = "root"\ngroup = "root"\nmode = "%s"\nrequires = ["%s"]\n' "$5" "$6" >>"$ROLE"
}
for_each_template site data.sites '{{data.root}}/etc/sites/{{item.key}}.conf' site.conf.hbs 0644 dir-sites
for_each_template unit data.services '{{data.root}}/etc/systemd/{{data.app.name}}-{{item.key}}.service' unit.service.hbs 0644 dir-systemd
for_each_template check data.checks '{{data.root}}/etc/{{data.app.name}}/conf.d/90-check-{{item.key}}.yml' check.yml.hbs 0640 dir-conf-d
for_each_template timer data.timers '{{data.root}}/etc/systemd/{{data.app.name}}-{{item.key}}.timer' timer.hbs 0644 dir-systemd

# 10 static files copied from files/srv/.
# source_file ID NAME MODE
source_file() {
    printf '\n[[step]]\nid = "%s"\ntype = "file"\npath = "{{data.root}}/srv/%s"\nsource = "srv/%s"\n' \
        "$1" "$2" "$2" >>"$ROLE"
    printf 'owner = "root"\ngroup = "root"\nmode = "%s"\nrequires = ["dir-srv"]\n' "$3" >>"$ROLE"
}
source_file srv-backup backup.sh 0755
source_file srv-rotate-keys rotate-keys.sh 0755
source_file srv-healthcheck healthcheck.sh 0755
source_file srv-ca-bundle ca-bundle.pem 0644
source_file srv-robots robots.txt 0644
source_file srv-maintenance maintenance.html 0644
source_file srv-mime-types mime.types 0644
source_file srv-blocklist blocklist.txt 0644
source_file srv-known-hosts known_hosts 0644
source_file srv-favicon favicon.ico 0644

# ---------------------------------------------------------------------------------------
# templates/
# ---------------------------------------------------------------------------------------

cat >"$OUT/templates/site.conf.hbs" <<'EOF'
# Managed by infra-agent (templates/site.conf.hbs) for {{host.name}} ({{host.env}}).
# Site {{item.key}} of {{data.app.name}}.
upstream {{item.value.upstream}}-{{item.key}} {
{{#each data.app.upstreams}}
    server {{this}} max_fails=3 fail_timeout=10s;
{{/each}}
    keepalive 32;
}

server {
    listen {{item.value.port}}{{#if item.value.tls}} ssl http2{{/if}};
    server_name {{item.value.server_name}}{{#each item.value.aliases}} {{this}}{{/each}};
{{#if item.value.tls}}
    ssl_certificate {{data.tls.cert}};
    ssl_certificate_key {{data.tls.key}};
    ssl_protocols {{join data.tls.protocols " "}};
    add_header Strict-Transport-Security "max-age=63072000" always;
{{/if}}
{{#if (has item.value "allow")}}
{{#each item.value.allow}}
    allow {{this}};
{{/each}}
    deny all;
{{/if}}
{{#if (has item.value "rate_limit")}}
    limit_req zone={{item.key}} burst=20 nodelay; # {{item.value.rate_limit}}
{{/if}}
    client_max_body_size 64m;
    access_log /var/log/nginx/{{item.key}}.access.log combined;
    error_log /var/log/nginx/{{item.key}}.error.log warn;

    location / {
        proxy_pass http://{{item.value.upstream}}-{{item.key}};
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_read_timeout 60s;
    }
}
EOF

cat >"$OUT/templates/unit.service.hbs" <<'EOF'
# Managed by infra-agent (templates/unit.service.hbs) for {{host.name}} ({{host.env}}).
[Unit]
Description={{data.app.name}} {{item.key}} ({{data.app.cluster}})
After={{join item.value.after " "}}
Wants={{join item.value.after " "}}

[Service]
Type=simple
User={{data.app.name}}
Group={{data.app.name}}
EnvironmentFile=-/etc/systemd/{{data.app.name}}-{{item.key}}.env
ExecStart={{item.value.exec}}
Restart={{item.value.restart}}
RestartSec=5
MemoryMax={{item.value.memory_max}}
StateDirectory={{data.app.name}}/{{item.key}}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths={{data.app.data_dir}}

[Install]
WantedBy=multi-user.target
EOF

cat >"$OUT/templates/check.yml.hbs" <<'EOF'
# Managed by infra-agent (templates/check.yml.hbs) for {{host.name}} ({{host.env}}).
check:
  name: {{data.app.name}}-{{item.key}}
  target: "{{item.value.target}}"
  interval: {{item.value.interval}}
  timeout: {{item.value.timeout}}
  labels:
    host: {{host.name}}
    env: {{host.env}}
    cluster: {{data.app.cluster}}
  notify:
    - {{data.app.admin_email}}
EOF

cat >"$OUT/templates/timer.hbs" <<'EOF'
# Managed by infra-agent (templates/timer.hbs) for {{host.name}} ({{host.env}}).
# Runs: {{item.value.command}}
[Unit]
Description={{data.app.name}} {{item.key}}

[Timer]
OnCalendar={{item.value.on_calendar}}
Persistent={{#if item.value.persistent}}true{{else}}false{{/if}}
RandomizedDelaySec=300
Unit={{data.app.name}}-{{item.key}}.service

[Install]
WantedBy=timers.target
EOF

# ---------------------------------------------------------------------------------------
# files/srv/
# ---------------------------------------------------------------------------------------

F=$OUT/files/srv
cat >"$F/backup.sh" <<'EOF'
#!/bin/sh
# Nightly backup of orchard: database dump and data directory, uploaded to the backup host.
set -eu
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=/var/backups/orchard/$STAMP
mkdir -p "$WORK"
pg_dump --format=directory --jobs=2 --file="$WORK/db" orchard
tar -C /var/lib/orchard -cf - . | zstd -q -T2 >"$WORK/data.tar.zst"
rsync -a --delete-after "$WORK/" backup.example.internal::orchard/"$STAMP"/
ln -sfn "$WORK" /var/backups/orchard/latest
find /var/backups/orchard -mindepth 1 -maxdepth 1 -mtime +7 -exec rm -rf {} +
EOF
cat >"$F/rotate-keys.sh" <<'EOF'
#!/bin/sh
# Monthly rotation of the session signing keys; keeps the previous key for verification.
set -eu
DIR=/var/lib/orchard/keys
umask 077
[ -f "$DIR/current" ] && mv "$DIR/current" "$DIR/previous"
openssl rand -hex 64 >"$DIR/current"
systemctl reload orchard-web.service orchard-api.service
EOF
cat >"$F/healthcheck.sh" <<'EOF'
#!/bin/sh
# Exit 0 when every orchard endpoint answers; used by the load balancer's agent check.
set -eu
for url in http://127.0.0.1:8100/healthz http://127.0.0.1:8101/healthz http://127.0.0.1:8102/healthz; do
    curl -fsS --max-time 2 "$url" >/dev/null || { echo "down: $url"; exit 1; }
done
echo up
EOF
{
    for i in $(seq 1 12); do
        echo "# Example Internal CA $i"
        echo "-----BEGIN CERTIFICATE-----"
        for l in $(seq 1 24); do
            printf 'MII%02d%02dBenchmarkCertificateLineNotRealDataAAAABBBBCCCCDDDDEEEEFFFFGGGG\n' "$i" "$l"
        done
        echo "-----END CERTIFICATE-----"
    done
} >"$F/ca-bundle.pem"
cat >"$F/robots.txt" <<'EOF'
User-agent: *
Disallow: /admin/
Disallow: /api/
Disallow: /hooks/
Sitemap: https://www.example.internal/sitemap.xml
EOF
{
    echo '<!doctype html>'
    echo '<html lang="en"><head><meta charset="utf-8"><title>Maintenance</title>'
    echo '<style>body{font-family:sans-serif;max-width:40em;margin:4em auto;color:#333}</style>'
    echo '</head><body><h1>Back soon</h1>'
    for i in $(seq 1 30); do
        echo "<p>Orchard is being upgraded. This page refreshes itself; paragraph $i of the notice.</p>"
    done
    echo '</body></html>'
} >"$F/maintenance.html"
{
    echo 'types {'
    for ext in html htm css js mjs json xml txt csv md png jpg jpeg gif webp avif svg ico \
        woff woff2 ttf otf pdf zip gz zst tar mp3 mp4 webm ogg wasm map yaml toml; do
        printf '    application/x-bench-%-8s %s;\n' "$ext" "$ext"
    done
    echo '}'
} >"$F/mime.types"
{
    echo '# Addresses refused by the sites (abuse reports).'
    for i in $(seq 0 399); do
        printf '203.0.%d.%d/32\n' $((i / 200)) $((i % 200 + 1))
    done
} >"$F/blocklist.txt"
for h in git backup db ldap mail; do
    printf '%s.example.internal ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkHostKey%sNotRealAAAAAAAAAAAA\n' "$h" "$h"
done >"$F/known_hosts"
# A small binary file (bytes 0..255, four times).
for _ in 1 2 3 4; do
    for i in $(seq 0 255); do printf "\\$(printf '%03o' "$i")"; done
done >"$F/favicon.ico"

echo "wrote $OUT: 1 host, role app with 8 directories and 100 files under $ROOT"
