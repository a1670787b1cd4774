#!/usr/bin/env bash
# Writes a synthetic but realistic state repository for benchmarking `infra-agent check`.
#
#   bench/gen-fleet.sh OUTDIR [HOSTS] [STEPS]        (defaults: 200 hosts, 30 steps)
#
# The fleet: one inventory (production) of HOSTS web and database servers named
# host-001..host-NNN, split over two sites, plus a glob group of canaries. Every host
# runs four common roles (base, admins, sshd, monitoring: 20 steps) and two roles of its
# function (nginx + webapp, or postgres + backup: 10 steps), so that each host's catalog
# has exactly STEPS steps (a `for_each` instance counts as one step, as `check` counts).
# Fewer steps drop the last ones of each path; more add an `extra` role of generated steps.
#
# The output depends only on the arguments (no dates, no randomness). Bash + coreutils.

set -euo pipefail
export LC_ALL=C

usage() {
    echo "usage: $0 OUTDIR [HOSTS] [STEPS]" >&2
    exit 2
}
[[ $# -ge 1 && $# -le 3 ]] || usage
OUT=$1
HOSTS=${2:-200}
STEPS=${3:-30}
[[ $HOSTS =~ ^[0-9]+$ && $HOSTS -ge 1 ]] || usage
[[ $STEPS =~ ^[0-9]+$ && $STEPS -ge 1 ]] || usage

if [[ -e $OUT && -n $(ls -A "$OUT" 2>/dev/null) ]]; then
    echo "$0: $OUT exists and is not empty" >&2
    exit 1
fi
mkdir -p "$OUT"/{inventory,group_data,host_data,roles,templates,files}

# Host names: host-001..host-200 (wider when HOSTS needs more digits).
WIDTH=${#HOSTS}
((WIDTH < 3)) && WIDTH=3
host_name() { printf 'host-%0*d' "$WIDTH" "$1"; }
# Every 4th host is a database server, the others web servers.
is_db() { (($1 % 4 == 0)); }
# The first half of the fleet is in Frankfurt, the second in Amsterdam.
site_of() { if (($1 * 2 <= HOSTS)); then echo fra; else echo ams; fi; }

# ---------------------------------------------------------------------------------------
# infra.toml, files/
# ---------------------------------------------------------------------------------------

cat >"$OUT/infra.toml" <<'EOF'
# Synthetic fleet for benchmarking `infra-agent check` (bench/gen-fleet.sh).
format = 1
min_agent_version = "0.1.0"

[bootstrap]
repository = "git@git.example.internal:infra/state.git"
branch = "main"
EOF

cat >"$OUT/files/issue.net" <<'EOF'
Authorized access only. Activity on this system is logged.
EOF

# ---------------------------------------------------------------------------------------
# inventory/production.toml
# ---------------------------------------------------------------------------------------

# host_list PREDICATE: the TOML array lines of the hosts for which PREDICATE succeeds.
host_list() {
    local i
    for ((i = 1; i <= HOSTS; i++)); do
        if "$@" "$i"; then printf '  "%s",\n' "$(host_name "$i")"; fi
    done
}
is_web() { ! is_db "$1"; }
at_fra() { [[ $(site_of "$1") == fra ]]; }
at_ams() { [[ $(site_of "$1") == ams ]]; }

ALL_ROLES='"base", "admins", "sshd", "monitoring"'
# (The `extra` role is appended below when STEPS exceeds the hand-written steps.)
CANARY_GLOB="$(printf 'host-%0*d' $((WIDTH - 1)) 0)?"

write_inventory() {
    local all_roles=$1
    {
        cat <<EOF
# The production fleet: $HOSTS hosts. host.env = "production".
# Groups come in this order, which is also the order their group_data is merged in.

[groups.all]
roles = [$all_roles]

[groups.web]
hosts = [
EOF
        host_list is_web
        cat <<'EOF'
]
roles = ["nginx", "webapp"]

[groups.db]
hosts = [
EOF
        host_list is_db
        cat <<'EOF'
]
roles = ["postgres", "backup"]

# Sites: data only (resolvers, time servers, log relay).
[groups.dc_fra]
hosts = [
EOF
        host_list at_fra
        cat <<'EOF'
]
roles = []

[groups.dc_ams]
hosts = [
EOF
        host_list at_ams
        cat <<EOF
]
roles = []

# Canaries get releases first and log more: a glob, so it only adds data to hosts
# listed above by name.
[groups.canary]
hosts = ["$CANARY_GLOB"]
roles = []
EOF
    } >"$OUT/inventory/production.toml"
}

# ---------------------------------------------------------------------------------------
# group_data/
# ---------------------------------------------------------------------------------------

cat >"$OUT/group_data/all.toml" <<'EOF'
# Data for every host; groups and host_data override it key by key.
timezone = "Etc/UTC"
domain = "example.internal"
locale = "en_US.UTF-8"
disabled_features = ["ipv6_privacy"]

[ntp]
servers = ["0.debian.pool.ntp.org", "1.debian.pool.ntp.org", "2.debian.pool.ntp.org"]
makestep = "1.0 3"
rtcsync = true

[dns]
resolvers = ["10.0.0.53", "10.0.1.53"]
search = ["example.internal"]
options = ["edns0", "timeout:2", "attempts:2"]

[sysctl]
"net.core.somaxconn" = 4096
"net.ipv4.tcp_syncookies" = 1
"net.ipv4.ip_local_port_range" = "10240 65000"
"vm.swappiness" = 10
"fs.inotify.max_user_watches" = 524288
"kernel.panic" = 10

[admins.alice]
uid = 2001
shell = "/bin/bash"
sudo = "ALL"
keys = [
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkKeyAliceLaptopNotRealAAAAAAAAAAAA alice@laptop",
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkKeyAliceYubikeyNotRealAAAAAAAAAAA alice@yubikey",
]

[admins.bob]
uid = 2002
shell = "/usr/bin/zsh"
sudo = "ALL"
nopasswd = true
keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkKeyBobWorkstationNotRealAAAAAAAAAA bob@ws"]

[admins.deploy]
uid = 2100
shell = "/bin/sh"
sudo = "/usr/bin/systemctl restart *, /usr/bin/systemctl reload *"
nopasswd = true
keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkKeyCiDeployerNotRealAAAAAAAAAAAAA ci@deploy"]

[limits]
nofile_soft = 65536
nofile_hard = 131072
nproc = 8192

[sshd]
port = 22
permit_root_login = "no"
password_authentication = false
max_auth_tries = 3
max_sessions = 10
client_alive_interval = 300
x11_forwarding = false
allow_groups = ["sudo", "deploy"]
kex_algorithms = ["sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org"]
ciphers = ["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com"]
macs = ["hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com"]
trusted_user_ca_keys = [
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkUserCaNotRealAAAAAAAAAAAAAAAAAAAAA user-ca-2024",
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkUserCaNextNotRealAAAAAAAAAAAAAAAAA user-ca-2025",
]

[monitoring]
listen_address = ":9100"
textfile_dir = "/var/lib/prometheus/node-exporter"
collectors = ["systemd", "processes", "textfile"]
disabled_collectors = ["wifi", "infiniband", "nfs"]
scrape_interval = "30s"

[logging]
remote = "logs.example.internal:6514"
protocol = "tcp"
level = "info"
retention_days = 14
queue_size = 100000
tls = true

[packages]
base = ["curl", "ca-certificates", "chrony", "rsyslog", "vim-tiny", "sudo", "prometheus-node-exporter"]
EOF

cat >"$OUT/group_data/web.toml" <<'EOF'
# Web servers: nginx in front of the shop application.

[nginx]
user = "www-data"
worker_processes = "auto"
worker_connections = 2048
client_max_body_size = "16m"
keepalive_timeout = 65
gzip = true
gzip_types = ["text/plain", "text/css", "application/json", "application/javascript", "image/svg+xml"]
tls_protocols = ["TLSv1.2", "TLSv1.3"]
server_tokens = false

[nginx.upstreams.app]
servers = ["127.0.0.1:8080", "127.0.0.1:8081"]
keepalive = 32

[nginx.upstreams.metrics]
servers = ["127.0.0.1:9100"]
keepalive = 4

[webapp]
name = "shop"
user = "shop"
port = 8080
workers = 4
release = "2024.11.3"
features = ["tls", "gzip", "healthcheck"]
server_names = ["shop.example.com", "www.shop.example.com"]
health_path = "/healthz"
memory_max = "2G"

[webapp.env]
APP_ENV = "production"
APP_LOG_FORMAT = "json"
DATABASE_URL = "postgres://shop@db.example.internal:5432/shop"
CACHE_URL = "redis://cache.example.internal:6379/0"

[monitoring]
collectors = ["systemd", "processes", "textfile", "tcpstat"]
EOF

cat >"$OUT/group_data/db.toml" <<'EOF'
# Database servers: PostgreSQL and its nightly backups.

[postgres]
version = 16
cluster = "main"
port = 5432
listen_addresses = ["localhost", "10.0.0.0"]
max_connections = 200
shared_buffers = "4GB"
effective_cache_size = "12GB"
work_mem = "16MB"
maintenance_work_mem = "512MB"
wal_level = "replica"
max_wal_senders = 5
checkpoint_timeout = "15min"
random_page_cost = 1.1
log_min_duration_statement = 500
extensions = ["pg_stat_statements", "auto_explain"]

[postgres.databases.shop]
owner = "shop"
encoding = "UTF8"

[postgres.databases.analytics]
owner = "analyst"
encoding = "UTF8"
readonly = true

[[postgres.hba]]
type = "local"
database = "all"
user = "postgres"
method = "peer"

[[postgres.hba]]
type = "hostssl"
database = "shop"
user = "shop"
address = "10.0.0.0/16"
method = "scram-sha-256"

[[postgres.hba]]
type = "hostssl"
database = "replication"
user = "replicator"
address = "10.0.0.0/16"
method = "scram-sha-256"

[backup]
enabled = true
target = "s3://backups-example/postgres"
hour = 3
minute = 15
compress = "zstd"
parallel = 2
exclude_databases = ["template0", "template1"]

[backup.retention]
daily = 7
weekly = 4
monthly = 6

[monitoring]
collectors = ["systemd", "processes", "textfile", "diskstats"]
EOF

write_site() {
    local site=$1 net=$2 city=$3
    cat >"$OUT/group_data/dc_$site.toml" <<EOF
# Site $site ($city): local resolvers, time servers and log relay.

[site]
name = "$site"
city = "$city"
network = "10.$net.0.0/16"
gateway = "10.$net.0.1"

[ntp]
servers = ["ntp1.$site.example.internal", "ntp2.$site.example.internal"]

[dns]
resolvers = ["10.$net.0.53", "10.$net.1.53"]
search = ["$site.example.internal", "example.internal"]

[logging]
remote = "relay.$site.example.internal:6514"
EOF
}
write_site fra 10 Frankfurt
write_site ams 20 Amsterdam

cat >"$OUT/group_data/canary.toml" <<'EOF'
# Canaries: newer release, more logging.
canary = true

[logging]
level = "debug"

[webapp]
release = "2024.12.0-rc1"
EOF

# ---------------------------------------------------------------------------------------
# host_data/: every 10th host has its own overrides
# ---------------------------------------------------------------------------------------

for ((i = 10; i <= HOSTS; i += 10)); do
    h=$(host_name "$i")
    {
        echo "# Data for $h only: wins over every group file."
        if ((i % 20 == 0)); then
            echo
            echo "# This host's kernel settings are managed by hand for now."
            echo 'disabled_features = ["ipv6_privacy", "sysctl"]'
        fi
        echo
        echo "[sshd]"
        echo "allow_users = [\"alice\", \"deploy\"]"
        echo
        echo "[limits]"
        echo "nofile_soft = $((65536 * 2))"
        if is_db "$i"; then
            cat <<EOF

[postgres]
shared_buffers = "8GB"
max_connections = $((100 + i % 7 * 50))

[backup]
hour = $((i % 5 + 1))
enabled = $(if ((i % 40 == 0)); then echo false; else echo true; fi)
EOF
        else
            cat <<EOF

[nginx]
worker_connections = 4096

[webapp]
workers = $((i % 4 + 4))

[webapp.env]
APP_SHARD = "$i"
EOF
        fi
    } >"$OUT/host_data/$h.toml"
done

# ---------------------------------------------------------------------------------------
# roles/: steps are emitted while the host's step budget lasts
# ---------------------------------------------------------------------------------------

n=0 # steps emitted so far on the current path (common roles, then a function's roles)
ROLE_FILE=
room() { ((n + $1 <= STEPS)); }
role() {
    ROLE_FILE="$OUT/roles/$1.toml"
    printf 'description = "%s"\n' "$2" >"$ROLE_FILE"
}
# step COUNT < TEXT: appends a [[step]] that yields COUNT catalog steps, if there is room.
step() {
    local count=$1 text
    text=$(cat)
    if room "$count"; then
        printf '\n%s\n' "$text" >>"$ROLE_FILE"
        n=$((n + count))
    fi
}

role base "Time, time sync, kernel settings and the login banner."
step 1 <<'EOF'
[[step]]
id = "timezone"
type = "file"
path = "/etc/timezone"
content = "{{data.timezone}}\n"
mode = "0644"
EOF
step 1 <<'EOF'
[[step]]
id = "localtime"
type = "symlink"
path = "/etc/localtime"
target = "/usr/share/zoneinfo/{{data.timezone}}"
EOF
step 1 <<'EOF'
[[step]]
id = "chrony-conf"
type = "template"
description = "time servers of the host's site"
path = "/etc/chrony/chrony.conf"
source = "chrony.conf.hbs"
owner = "root"
group = "root"
mode = "0644"
EOF
step 1 <<'EOF'
[[step]]
id = "sysctl"
type = "template"
path = "/etc/sysctl.d/90-infra.conf"
source = "sysctl.conf.hbs"
mode = "0644"
when = "'sysctl' not in data.disabled_features"
EOF
step 1 <<'EOF'
[[step]]
id = "motd"
type = "file"
path = "/etc/motd"
content = '''

  {{host.name}}.{{data.domain}} ({{host.env}}, site {{data.site.name}})
  groups: {{join host.groups ", "}}
  roles:  {{join host.roles ", "}}
{{#if (has data "canary")}}
  CANARY: this host gets releases first.
{{/if}}
  Managed by infra-agent: change the state repository, not this host.

'''
owner = "root"
group = "root"
mode = "0644"
EOF

role admins "Administrators: home directories, sudo rights and resource limits."
step 3 <<'EOF'
[[step]]
id = "admin-home"
type = "directory"
description = "one home directory per administrator"
for_each = "data.admins"
path = "/home/{{item.key}}"
owner = "{{item.key}}"
group = "{{item.key}}"
mode = "0750"
EOF
step 1 <<'EOF'
[[step]]
id = "sudoers-admins"
type = "template"
path = "/etc/sudoers.d/90-infra-admins"
source = "sudoers.hbs"
owner = "root"
group = "root"
mode = "0440"
validate = ["visudo", "-cf", "{path}"]
EOF
step 1 <<'EOF'
[[step]]
id = "admin-limits"
type = "file"
path = "/etc/security/limits.d/90-admins.conf"
content = '''
# Managed by infra-agent (role admins).
{{#each data.admins}}
{{@key}}  soft  nofile  {{@root.data.limits.nofile_soft}}
{{@key}}  hard  nofile  {{@root.data.limits.nofile_hard}}
{{@key}}  soft  nproc   {{@root.data.limits.nproc}}
{{/each}}
'''
mode = "0644"
EOF

role sshd "sshd hardening: keys only, a user CA, modern algorithms."
step 1 <<'EOF'
[[step]]
id = "sshd-config-dir"
type = "directory"
path = "/etc/ssh/sshd_config.d"
owner = "root"
group = "root"
mode = "0755"
EOF
notify=''
room 2 && notify='notify = ["sshd-banner"]'
step 1 <<EOF
[[step]]
id = "sshd-dropin"
type = "template"
description = "sshd lockdown, checked with sshd -t"
path = "/etc/ssh/sshd_config.d/00-infra.conf"
source = "sshd_config.hbs"
owner = "root"
group = "root"
mode = "0644"
validate = ["sshd", "-t", "-f", "{path}"]
requires = ["sshd-config-dir"]
$notify
EOF
step 1 <<'EOF'
[[step]]
id = "sshd-banner"
type = "file"
path = "/etc/issue.net"
source = "issue.net"
mode = "0644"
EOF
step 1 <<'EOF'
[[step]]
id = "ssh-user-ca"
type = "file"
path = "/etc/ssh/trusted-user-ca-keys.pem"
content = '''
{{#each data.sshd.trusted_user_ca_keys}}
{{this}}
{{/each}}
'''
owner = "root"
group = "root"
mode = "0644"
requires = ["sshd-config-dir"]
EOF
step 1 <<'EOF'
[[step]]
id = "ssh-dsa-host-key"
type = "file"
description = "no DSA host keys on current Debian"
path = "/etc/ssh/ssh_host_dsa_key"
state = "absent"
when = "facts.os.id == 'debian' && facts.os.version_id != '10'"
EOF

role monitoring "Prometheus node exporter, log forwarding and log rotation."
step 1 <<'EOF'
[[step]]
id = "prometheus-lib"
type = "directory"
path = "/var/lib/prometheus"
mode = "0755"
EOF
step 1 <<'EOF'
[[step]]
id = "node-exporter-textfile"
type = "directory"
path = "{{data.monitoring.textfile_dir}}"
owner = "root"
group = "root"
mode = "0755"
requires = ["prometheus-lib"]
EOF
step 1 <<'EOF'
[[step]]
id = "node-exporter-defaults"
type = "template"
path = "/etc/default/prometheus-node-exporter"
source = "node-exporter.default.hbs"
mode = "0644"
EOF
step 1 <<'EOF'
[[step]]
id = "rsyslog-forward"
type = "template"
path = "/etc/rsyslog.d/60-forward.conf"
source = "rsyslog-forward.conf.hbs"
mode = "0644"
when = "defined(data.logging.remote) && data.logging.level != 'off'"
EOF
step 1 <<'EOF'
[[step]]
id = "logrotate-infra"
type = "file"
path = "/etc/logrotate.d/infra"
content = '''
# Managed by infra-agent (role monitoring).
/var/log/infra-agent/*.log {
    daily
    rotate {{data.logging.retention_days}}
    compress
    delaycompress
    missingok
    notifempty
{{#if (has data "webapp.name")}}
    postrotate
        systemctl kill -s HUP {{default data.webapp.name "app"}}.service || true
    endscript
{{/if}}
}
'''
mode = "0644"
EOF
COMMON=$n

# Web path: nginx, webapp.
role nginx "nginx as the TLS front of the application."
step 1 <<'EOF'
[[step]]
id = "nginx-conf"
type = "template"
path = "/etc/nginx/nginx.conf"
source = "nginx.conf.hbs"
mode = "0644"
validate = ["nginx", "-t", "-c", "{path}"]
EOF
step 1 <<'EOF'
[[step]]
id = "nginx-tls-dir"
type = "directory"
path = "/etc/nginx/tls"
owner = "root"
group = { data = "nginx.user" }
mode = "0750"
when = "'tls' in data.webapp.features"
EOF
step 1 <<'EOF'
[[step]]
id = "nginx-site"
type = "template"
path = "/etc/nginx/sites-available/{{data.webapp.name}}.conf"
source = "site.conf.hbs"
mode = "0644"
requires = ["nginx-conf"]
EOF
step 1 <<'EOF'
[[step]]
id = "nginx-site-enabled"
type = "symlink"
path = "/etc/nginx/sites-enabled/{{data.webapp.name}}.conf"
target = "/etc/nginx/sites-available/{{data.webapp.name}}.conf"
requires = ["nginx-site"]
EOF
step 1 <<'EOF'
[[step]]
id = "nginx-default-site"
type = "symlink"
description = "Debian's welcome page"
path = "/etc/nginx/sites-enabled/default"
state = "absent"
EOF

role webapp "The shop application: its tree, environment and systemd unit."
step 1 <<'EOF'
[[step]]
id = "webapp-root"
type = "directory"
path = "/srv/{{data.webapp.name}}"
owner = { data = "webapp.user" }
group = { data = "webapp.user" }
mode = "0755"
EOF
step 1 <<'EOF'
[[step]]
id = "webapp-releases"
type = "directory"
path = "/srv/{{data.webapp.name}}/releases"
owner = "{{data.webapp.user}}"
group = "{{data.webapp.user}}"
mode = "0755"
requires = ["webapp-root"]
EOF
step 1 <<'EOF'
[[step]]
id = "webapp-env"
type = "file"
path = "/etc/default/{{data.webapp.name}}"
content = '''
# Managed by infra-agent (role webapp) for {{host.name}}.
APP_NAME={{data.webapp.name}}
APP_PORT={{data.webapp.port}}
APP_WORKERS={{data.webapp.workers}}
APP_RELEASE={{data.webapp.release}}
APP_SITE={{data.site.name}}
APP_LOG_LEVEL={{data.logging.level}}
{{#each data.webapp.env}}
{{@key}}={{this}}
{{/each}}
'''
owner = "root"
group = "{{data.webapp.user}}"
mode = "0640"
requires = ["webapp-root"]
EOF
notify=''
room 2 && notify='notify = ["webapp-current"]'
step 1 <<EOF
[[step]]
id = "webapp-unit"
type = "template"
path = "/etc/systemd/system/{{data.webapp.name}}.service"
source = "webapp.service.hbs"
mode = "0644"
requires = ["webapp-env"]
$notify
EOF
step 1 <<'EOF'
[[step]]
id = "webapp-current"
type = "symlink"
path = "/srv/{{data.webapp.name}}/current"
target = "/srv/{{data.webapp.name}}/releases/{{data.webapp.release}}"
requires = ["webapp-releases"]
EOF
WEB=$n

# Database path: postgres, backup.
n=$COMMON
role postgres "PostgreSQL server configuration."
step 1 <<'EOF'
[[step]]
id = "pg-conf-dir"
type = "directory"
path = "/etc/postgresql/{{data.postgres.version}}/{{data.postgres.cluster}}"
owner = "postgres"
group = "postgres"
mode = "0755"
EOF
step 1 <<'EOF'
[[step]]
id = "postgresql-conf"
type = "template"
path = "/etc/postgresql/{{data.postgres.version}}/{{data.postgres.cluster}}/postgresql.conf"
source = "postgresql.conf.hbs"
owner = "postgres"
group = "postgres"
mode = "0644"
requires = ["pg-conf-dir"]
EOF
step 1 <<'EOF'
[[step]]
id = "pg-hba"
type = "template"
path = "/etc/postgresql/{{data.postgres.version}}/{{data.postgres.cluster}}/pg_hba.conf"
source = "pg_hba.conf.hbs"
owner = "postgres"
group = "postgres"
mode = "0640"
requires = ["pg-conf-dir"]
EOF
step 1 <<'EOF'
[[step]]
id = "pg-connection-tuning"
type = "file"
path = "/etc/sysctl.d/91-postgres.conf"
content = '''
# Managed by infra-agent (role postgres): {{data.postgres.max_connections}} connections.
kernel.shmmax = 17179869184
net.core.somaxconn = {{data.postgres.max_connections}}
'''
mode = "0644"
when = "data.postgres.max_connections > 100"
EOF
step 1 <<'EOF'
[[step]]
id = "pg-data-dir"
type = "directory"
path = "/var/lib/postgresql/{{data.postgres.version}}/{{data.postgres.cluster}}"
owner = "postgres"
group = "postgres"
mode = "0700"
EOF

role backup "Nightly PostgreSQL backups to object storage."
step 1 <<'EOF'
[[step]]
id = "backup-dir"
type = "directory"
path = "/var/backups/postgres"
owner = "postgres"
group = "postgres"
mode = "0700"
EOF
step 1 <<'EOF'
[[step]]
id = "backup-script"
type = "template"
path = "/usr/local/sbin/pg-backup"
source = "backup.sh.hbs"
mode = "0750"
requires = ["backup-dir"]
EOF
step 1 <<'EOF'
[[step]]
id = "backup-cron"
type = "file"
path = "/etc/cron.d/pg-backup"
content = '''
# Managed by infra-agent (role backup).
MAILTO=""
{{data.backup.minute}} {{data.backup.hour}} * * * postgres /usr/local/sbin/pg-backup >> /var/log/pg-backup.log 2>&1
'''
mode = "0644"
when = "data.backup.enabled && host.env == 'production'"
requires = ["backup-script"]
EOF
step 1 <<'EOF'
[[step]]
id = "backup-retention"
type = "file"
path = "/etc/pg-backup/retention.conf"
content = '''
# Managed by infra-agent (role backup).
{{#each data.backup.retention}}
keep_{{@key}}={{this}}
{{/each}}
target={{data.backup.target}}/{{data.site.name}}/{{host.name}}
'''
mode = "0644"
EOF
step 1 <<'EOF'
[[step]]
id = "backup-log-link"
type = "symlink"
path = "/var/log/postgresql/backup.log"
target = "/var/log/pg-backup.log"
EOF
DB=$n

if ((WEB != DB)); then
    echo "$0: internal error: web path has $WEB steps, db path $DB" >&2
    exit 1
fi

# More steps than written above: an `extra` role of generated steps, run by every host.
if ((n < STEPS)); then
    ALL_ROLES="$ALL_ROLES, \"extra\""
    role extra "Generated steps that bring every host to $STEPS steps."
    j=0
    while ((n < STEPS)); do
        j=$((j + 1))
        id=$(printf 'extra-%03d' "$j")
        case $((j % 4)) in
        1) step 1 <<EOF ;;
[[step]]
id = "$id"
type = "directory"
path = "/opt/extra/$id"
mode = "0755"
EOF
        2) step 1 <<EOF ;;
[[step]]
id = "$id"
type = "template"
path = "/etc/extra/$id.conf"
source = "extra.conf.hbs"
mode = "0644"
EOF
        3) step 1 <<EOF ;;
[[step]]
id = "$id"
type = "file"
path = "/etc/extra/$id.env"
content = "HOST={{host.name}}\nSITE={{data.site.name}}\nID=$id\n"
mode = "0644"
when = "host.env == 'production'"
EOF
        0) step 1 <<EOF ;;
[[step]]
id = "$id"
type = "symlink"
path = "/usr/local/bin/$id"
target = "/opt/extra/$id"
EOF
        esac
    done
fi

write_inventory "$ALL_ROLES"

# ---------------------------------------------------------------------------------------
# templates/
# ---------------------------------------------------------------------------------------

cat >"$OUT/templates/chrony.conf.hbs" <<'EOF'
# Managed by infra-agent (templates/chrony.conf.hbs) for {{host.name}}.
# Time servers of site {{data.site.name}} ({{data.site.city}}).

{{#each data.ntp.servers}}
{{#if @first}}
server {{this}} iburst prefer
{{else}}
server {{this}} iburst
{{/if}}
{{/each}}

# Use time sources from DHCP.
sourcedir /run/chrony-dhcp

# Keys for NTP authentication.
keyfile /etc/chrony/chrony.keys

# Drift of the system clock.
driftfile /var/lib/chrony/chrony.drift

# Save NTS keys and cookies.
ntsdumpdir /var/lib/chrony

# Log files location.
logdir /var/log/chrony

# Stop bad estimates upsetting the machine clock.
maxupdateskew 100.0

{{#if data.ntp.rtcsync}}
# Copy system time to the real-time clock every 11 minutes.
rtcsync
{{/if}}

# Step the clock if it is off by more than a second in the first updates.
makestep {{default data.ntp.makestep "1 3"}}

# Leap seconds from the system tz database.
leapsectz right/UTC
EOF

cat >"$OUT/templates/sysctl.conf.hbs" <<'EOF'
# Managed by infra-agent (templates/sysctl.conf.hbs) for {{host.name}}.
# Applied at boot by systemd-sysctl; `sysctl --system` applies it now.

# --- from data.sysctl ---
{{#each data.sysctl}}
{{@key}} = {{this}}
{{/each}}

# --- network ---
net.ipv4.conf.all.rp_filter = 1
net.ipv4.conf.default.rp_filter = 1
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.default.accept_redirects = 0
net.ipv4.conf.all.send_redirects = 0
net.ipv6.conf.all.accept_redirects = 0
net.ipv4.conf.all.log_martians = 1
net.ipv4.tcp_fin_timeout = 15
net.ipv4.tcp_tw_reuse = 1
{{#if (has data "postgres")}}

# --- database ---
vm.overcommit_memory = 2
vm.dirty_background_ratio = 5
vm.dirty_ratio = 10
{{/if}}
{{#if (has data "nginx")}}

# --- web ---
net.core.netdev_max_backlog = 16384
net.ipv4.tcp_max_syn_backlog = 8192
{{/if}}

# --- security ---
kernel.kptr_restrict = 2
kernel.dmesg_restrict = 1
kernel.unprivileged_bpf_disabled = 1
fs.protected_hardlinks = 1
fs.protected_symlinks = 1
EOF

cat >"$OUT/templates/sudoers.hbs" <<'EOF'
# Managed by infra-agent (templates/sudoers.hbs), checked with visudo before it is installed.
# Administrators of {{host.name}} ({{host.env}}).

Defaults    env_reset
Defaults    mail_badpass
Defaults    secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
Defaults    use_pty
Defaults    logfile="/var/log/sudo.log"
Defaults    timestamp_timeout=5
Defaults:%sudo  !lecture

# Command aliases.
Cmnd_Alias  SERVICES = /usr/bin/systemctl restart *, /usr/bin/systemctl reload *, /usr/bin/systemctl status *
Cmnd_Alias  LOGS = /usr/bin/journalctl *

{{#each data.admins}}
# {{@key}} (uid {{this.uid}}, shell {{default this.shell "/bin/sh"}})
{{#if (has this "nopasswd")}}
{{#if this.nopasswd}}
{{@key}}  ALL=(ALL:ALL) NOPASSWD: {{this.sudo}}
{{else}}
{{@key}}  ALL=(ALL:ALL) {{this.sudo}}
{{/if}}
{{else}}
{{@key}}  ALL=(ALL:ALL) {{this.sudo}}
{{/if}}
{{/each}}

# Everyone in the sudo group may read logs.
%sudo  ALL=(root) NOPASSWD: LOGS
{{#if (has data "webapp.user")}}
%{{data.webapp.user}}  ALL=(root) NOPASSWD: /usr/bin/systemctl restart {{data.webapp.name}}.service
{{/if}}
{{#if (has data "postgres")}}
%postgres  ALL=(root) NOPASSWD: /usr/bin/systemctl reload postgresql@{{data.postgres.version}}-{{data.postgres.cluster}}.service
{{/if}}
EOF

cat >"$OUT/templates/sshd_config.hbs" <<'EOF'
# Managed by infra-agent (templates/sshd_config.hbs), checked with `sshd -t`.
# Sorts first in sshd_config.d, so these settings win over the main file.
# {{host.name}}.{{data.domain}} ({{host.env}}, site {{data.site.name}})

Port {{data.sshd.port}}
AddressFamily {{default data.sshd.address_family "any"}}
ListenAddress 0.0.0.0
{{#unless (has data.sshd "listen_ipv4_only")}}
ListenAddress ::
{{/unless}}

# Authentication
PermitRootLogin {{data.sshd.permit_root_login}}
PasswordAuthentication {{#if data.sshd.password_authentication}}yes{{else}}no{{/if}}
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthenticationMethods publickey
MaxAuthTries {{data.sshd.max_auth_tries}}
MaxSessions {{data.sshd.max_sessions}}
LoginGraceTime 30
TrustedUserCAKeys /etc/ssh/trusted-user-ca-keys.pem
AuthorizedKeysFile .ssh/authorized_keys

# Who may log in
AllowGroups {{join data.sshd.allow_groups " "}}
{{#if (has data.sshd "allow_users")}}
AllowUsers {{join data.sshd.allow_users " "}}
{{/if}}

# Algorithms
KexAlgorithms {{join data.sshd.kex_algorithms ","}}
Ciphers {{join data.sshd.ciphers ","}}
MACs {{join data.sshd.macs ","}}
HostKeyAlgorithms ssh-ed25519,rsa-sha2-512,rsa-sha2-256

# Sessions
ClientAliveInterval {{data.sshd.client_alive_interval}}
ClientAliveCountMax 3
TCPKeepAlive no
X11Forwarding {{#if data.sshd.x11_forwarding}}yes{{else}}no{{/if}}
AllowAgentForwarding no
AllowTcpForwarding {{default data.sshd.allow_tcp_forwarding "no"}}
PermitTunnel no
PrintMotd no
Banner /etc/issue.net

# Logging
SyslogFacility AUTH
LogLevel {{#if (eq data.logging.level "debug")}}VERBOSE{{else}}INFO{{/if}}

Subsystem sftp internal-sftp
EOF

cat >"$OUT/templates/node-exporter.default.hbs" <<'EOF'
# Managed by infra-agent (templates/node-exporter.default.hbs).
# Read by prometheus-node-exporter.service on {{host.name}}.
# Metrics written by infra-agent itself land in {{data.monitoring.textfile_dir}}.
#
# Scraped every {{data.monitoring.scrape_interval}} by the Prometheus servers of site
# {{data.site.name}} ({{data.site.network}}).

# Enabled collectors (besides the defaults):
{{#each data.monitoring.collectors}}
#   - {{this}}
{{/each}}

# Disabled collectors:
{{#each data.monitoring.disabled_collectors}}
#   - {{this}}
{{/each}}

ARGS="\
  --web.listen-address={{data.monitoring.listen_address}} \
  --web.telemetry-path=/metrics \
  --collector.textfile.directory={{data.monitoring.textfile_dir}} \
{{#each data.monitoring.collectors}}
  --collector.{{this}} \
{{/each}}
{{#each data.monitoring.disabled_collectors}}
  --no-collector.{{this}} \
{{/each}}
  --collector.filesystem.mount-points-exclude=^/(dev|proc|run|sys|var/lib/docker/.+)($|/) \
  --collector.netclass.ignored-devices=^(veth.*|docker.*|br-.*)$ \
  --log.level={{#if (eq data.logging.level "debug")}}debug{{else}}info{{/if}}"
EOF

cat >"$OUT/templates/rsyslog-forward.conf.hbs" <<'EOF'
# Managed by infra-agent (templates/rsyslog-forward.conf.hbs).
# Forwards every message of {{host.name}} to the log relay of site {{data.site.name}}.

module(load="omfwd")
{{#if data.logging.tls}}
global(
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="/etc/ssl/certs/ca-certificates.crt"
)
{{/if}}

template(name="InfraJson" type="list" option.jsonf="on") {
  property(outname="@timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="severity" name="syslogseverity-text" format="jsonf")
  property(outname="facility" name="syslogfacility-text" format="jsonf")
  property(outname="program" name="programname" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
  constant(outname="env" value="{{host.env}}" format="jsonf")
  constant(outname="site" value="{{data.site.name}}" format="jsonf")
}

*.* action(
  type="omfwd"
  target="{{data.logging.remote}}"
  protocol="{{default data.logging.protocol "tcp"}}"
{{#if data.logging.tls}}
  StreamDriver="gtls"
  StreamDriverMode="1"
  StreamDriverAuthMode="x509/name"
{{/if}}
  template="InfraJson"
  queue.type="LinkedList"
  queue.size="{{data.logging.queue_size}}"
  queue.filename="forward"
  queue.saveOnShutdown="on"
  action.resumeRetryCount="-1"
)
EOF

cat >"$OUT/templates/nginx.conf.hbs" <<'EOF'
# Managed by infra-agent (templates/nginx.conf.hbs), checked with `nginx -t`.
# {{host.name}} ({{host.env}}), site {{data.site.name}}

user {{data.nginx.user}};
worker_processes {{data.nginx.worker_processes}};
pid /run/nginx.pid;
error_log /var/log/nginx/error.log {{#if (eq data.logging.level "debug")}}info{{else}}warn{{/if}};
include /etc/nginx/modules-enabled/*.conf;

events {
    worker_connections {{data.nginx.worker_connections}};
    multi_accept on;
}

http {
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    types_hash_max_size 2048;
    server_tokens {{#if data.nginx.server_tokens}}on{{else}}off{{/if}};
    keepalive_timeout {{data.nginx.keepalive_timeout}};
    client_max_body_size {{data.nginx.client_max_body_size}};

    include /etc/nginx/mime.types;
    default_type application/octet-stream;

    ssl_protocols {{join data.nginx.tls_protocols " "}};
    ssl_prefer_server_ciphers off;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 1d;

    log_format json escape=json '{'
        '"time":"$time_iso8601",'
        '"host":"{{host.name}}",'
        '"remote":"$remote_addr",'
        '"request":"$request",'
        '"status":$status,'
        '"bytes":$body_bytes_sent,'
        '"duration":$request_time'
    '}';
    access_log /var/log/nginx/access.log json;

{{#if data.nginx.gzip}}
    gzip on;
    gzip_vary on;
    gzip_proxied any;
    gzip_comp_level 5;
    gzip_types {{join data.nginx.gzip_types " "}};
{{else}}
    gzip off;
{{/if}}

{{#each data.nginx.upstreams}}
    upstream {{@key}} {
{{#each this.servers}}
        server {{this}} max_fails=3 fail_timeout=10s;
{{/each}}
        keepalive {{default this.keepalive 16}};
    }

{{/each}}
    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      close;
    }

    include /etc/nginx/conf.d/*.conf;
    include /etc/nginx/sites-enabled/*;
}
EOF

cat >"$OUT/templates/site.conf.hbs" <<'EOF'
# Managed by infra-agent (templates/site.conf.hbs): {{data.webapp.name}} on {{host.name}}.

server {
    listen 80;
    listen [::]:80;
    server_name {{join data.webapp.server_names " "}};
{{#if (has data "canary")}}
    add_header X-Canary "{{host.name}}" always;
{{/if}}
    location /.well-known/acme-challenge/ {
        root /var/www/acme;
    }
    location / {
        return 301 https://$host$request_uri;
    }
}

server {
    listen 443 ssl;
    listen [::]:443 ssl;
    http2 on;
    server_name {{join data.webapp.server_names " "}};

    ssl_certificate /etc/nginx/tls/{{data.webapp.name}}.crt;
    ssl_certificate_key /etc/nginx/tls/{{data.webapp.name}}.key;

    add_header Strict-Transport-Security "max-age=63072000" always;
    add_header X-Content-Type-Options nosniff always;
    add_header X-Frame-Options DENY always;
    add_header X-Served-By "{{host.name}}.{{data.site.name}}" always;

    root /srv/{{data.webapp.name}}/current/public;

    location {{data.webapp.health_path}} {
        access_log off;
        proxy_pass http://app;
    }

    location /static/ {
        expires 7d;
        add_header Cache-Control "public, immutable";
        try_files $uri =404;
    }

    location / {
        proxy_pass http://app;
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_read_timeout 60s;
    }
{{#if (has data.nginx.upstreams "metrics")}}

    location /node-metrics {
        allow {{data.site.network}};
        deny all;
        proxy_pass http://metrics/metrics;
    }
{{/if}}
}
EOF

cat >"$OUT/templates/webapp.service.hbs" <<'EOF'
# Managed by infra-agent (templates/webapp.service.hbs).
# {{data.webapp.name}} {{data.webapp.release}} on {{host.name}} ({{host.env}})

[Unit]
Description={{data.webapp.name}} application server
Documentation=https://git.example.internal/apps/{{data.webapp.name}}
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
User={{data.webapp.user}}
Group={{data.webapp.user}}
WorkingDirectory=/srv/{{data.webapp.name}}/current
EnvironmentFile=/etc/default/{{data.webapp.name}}
ExecStart=/srv/{{data.webapp.name}}/current/bin/server --port {{data.webapp.port}} --workers {{data.webapp.workers}}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s
TimeoutStopSec=30s
MemoryMax={{default data.webapp.memory_max "1G"}}
TasksMax={{default data.webapp.tasks_max 4096}}
LimitNOFILE={{data.limits.nofile_soft}}

# Sandboxing
NoNewPrivileges=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectSystem=strict
ProtectHome=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
LockPersonality=yes
ReadWritePaths=/srv/{{data.webapp.name}}/shared /var/log/{{data.webapp.name}}
{{#if (has data.webapp "features")}}
# Features: {{join data.webapp.features ", "}}
{{/if}}

[Install]
WantedBy=multi-user.target
EOF

cat >"$OUT/templates/postgresql.conf.hbs" <<'EOF'
# Managed by infra-agent (templates/postgresql.conf.hbs).
# PostgreSQL {{data.postgres.version}}, cluster {{data.postgres.cluster}} on {{host.name}} ({{host.env}}).

#------------------------------------------------------------------------------
# FILE LOCATIONS
#------------------------------------------------------------------------------
data_directory = '/var/lib/postgresql/{{data.postgres.version}}/{{data.postgres.cluster}}'
hba_file = '/etc/postgresql/{{data.postgres.version}}/{{data.postgres.cluster}}/pg_hba.conf'
ident_file = '/etc/postgresql/{{data.postgres.version}}/{{data.postgres.cluster}}/pg_ident.conf'
external_pid_file = '/var/run/postgresql/{{data.postgres.version}}-{{data.postgres.cluster}}.pid'

#------------------------------------------------------------------------------
# CONNECTIONS AND AUTHENTICATION
#------------------------------------------------------------------------------
listen_addresses = '{{join data.postgres.listen_addresses ","}}'
port = {{data.postgres.port}}
max_connections = {{data.postgres.max_connections}}
unix_socket_directories = '/var/run/postgresql'
ssl = on
ssl_cert_file = '/etc/ssl/certs/ssl-cert-snakeoil.pem'
ssl_key_file = '/etc/ssl/private/ssl-cert-snakeoil.key'
password_encryption = scram-sha-256

#------------------------------------------------------------------------------
# RESOURCE USAGE
#------------------------------------------------------------------------------
shared_buffers = {{data.postgres.shared_buffers}}
work_mem = {{data.postgres.work_mem}}
maintenance_work_mem = {{data.postgres.maintenance_work_mem}}
effective_cache_size = {{data.postgres.effective_cache_size}}
dynamic_shared_memory_type = posix

#------------------------------------------------------------------------------
# WRITE-AHEAD LOG AND REPLICATION
#------------------------------------------------------------------------------
wal_level = {{data.postgres.wal_level}}
max_wal_senders = {{data.postgres.max_wal_senders}}
checkpoint_timeout = {{data.postgres.checkpoint_timeout}}
checkpoint_completion_target = 0.9
max_wal_size = {{default data.postgres.max_wal_size "4GB"}}
min_wal_size = {{default data.postgres.min_wal_size "1GB"}}

#------------------------------------------------------------------------------
# QUERY TUNING
#------------------------------------------------------------------------------
random_page_cost = {{data.postgres.random_page_cost}}
effective_io_concurrency = 200

#------------------------------------------------------------------------------
# LOGGING
#------------------------------------------------------------------------------
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = {{data.postgres.log_min_duration_statement}}
log_checkpoints = on
log_lock_waits = on
log_timezone = '{{data.timezone}}'
cluster_name = '{{data.postgres.version}}/{{data.postgres.cluster}}'

#------------------------------------------------------------------------------
# CLIENT DEFAULTS
#------------------------------------------------------------------------------
datestyle = 'iso, mdy'
timezone = '{{data.timezone}}'
lc_messages = '{{data.locale}}'
default_text_search_config = 'pg_catalog.english'
shared_preload_libraries = '{{join data.postgres.extensions ","}}'
{{#if (has data.postgres "extensions")}}
{{#each data.postgres.extensions}}
# extension: {{this}}
{{/each}}
{{/if}}

include_dir = 'conf.d'
EOF

cat >"$OUT/templates/pg_hba.conf.hbs" <<'EOF'
# Managed by infra-agent (templates/pg_hba.conf.hbs).
# Client authentication of PostgreSQL {{data.postgres.version}} on {{host.name}}.
#
# TYPE      DATABASE        USER            ADDRESS                 METHOD

{{#each data.postgres.hba}}
{{#if (eq this.type "local")}}
{{this.type}}       {{this.database}}             {{this.user}}                                  {{this.method}}
{{else}}
{{this.type}}   {{this.database}}            {{this.user}}            {{default this.address "all"}}             {{this.method}}
{{/if}}
{{/each}}

# Databases and their owners:
{{#each data.postgres.databases}}
#   {{@key}}: owner {{this.owner}}, encoding {{this.encoding}}{{#if (has this "readonly")}} (read-only){{/if}}
{{/each}}
{{#each data.postgres.databases}}
{{#if (has this "readonly")}}
hostssl   {{@key}}          {{this.owner}}          {{@root.data.site.network}}           scram-sha-256
{{/if}}
{{/each}}

# Local connections of the site's monitoring.
hostssl   postgres        monitoring      {{data.site.network}}           scram-sha-256

{{#if (has data "canary")}}
# Canary: the release team may connect read-only.
hostssl   all             release_ro      {{data.site.network}}           scram-sha-256
{{/if}}

# Everything else is rejected.
host      all             all             0.0.0.0/0               reject
host      all             all             ::/0                    reject
EOF

cat >"$OUT/templates/backup.sh.hbs" <<'EOF'
#!/bin/sh
# Managed by infra-agent (templates/backup.sh.hbs).
# Nightly logical backups of PostgreSQL {{data.postgres.version}} on {{host.name}} to
# {{data.backup.target}}/{{data.site.name}}/{{host.name}}.
set -eu

TARGET="{{data.backup.target}}/{{data.site.name}}/{{host.name}}"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=/var/backups/postgres/$STAMP
PARALLEL={{data.backup.parallel}}
EXCLUDE="{{join data.backup.exclude_databases " "}}"

mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

log() {
    printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*"
}

pg_dumpall --globals-only --port={{data.postgres.port}} > "$WORK/globals.sql"

for db in $(psql --port={{data.postgres.port}} -Atc "select datname from pg_database where datallowconn"); do
    case " $EXCLUDE " in
        *" $db "*) continue ;;
    esac
    log "dumping $db"
    pg_dump --port={{data.postgres.port}} --format=directory --jobs="$PARALLEL" \
        --file="$WORK/$db" "$db"
done

{{#if (eq data.backup.compress "zstd")}}
tar -C "$WORK" -cf - . | zstd -T"$PARALLEL" -q > "$WORK.tar.zst"
ARCHIVE="$WORK.tar.zst"
{{else}}
tar -C "$WORK" -czf "$WORK.tar.gz" .
ARCHIVE="$WORK.tar.gz"
{{/if}}

log "uploading $ARCHIVE to $TARGET"
aws s3 cp --only-show-errors "$ARCHIVE" "$TARGET/$(basename "$ARCHIVE")"
rm -f "$ARCHIVE"

# Retention: {{#each data.backup.retention}}{{@key}}={{this}} {{/each}}
/usr/local/sbin/pg-backup-prune \
{{#each data.backup.retention}}
    --keep-{{@key}}={{this}} \
{{/each}}
    "$TARGET"
log "done"
EOF

if [[ -f $OUT/roles/extra.toml ]]; then
    cat >"$OUT/templates/extra.conf.hbs" <<'EOF'
# Managed by infra-agent (templates/extra.conf.hbs) for {{host.name}} ({{host.env}}).
site = "{{data.site.name}}"
resolvers = "{{join data.dns.resolvers " "}}"
{{#each data.ntp.servers}}
ntp.{{@index}} = "{{this}}"
{{/each}}
EOF
fi

echo "wrote $OUT: $HOSTS hosts x $STEPS steps"
