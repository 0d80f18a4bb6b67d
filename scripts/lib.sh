# Shared set-up for scripts/run and scripts/test: make a fresh Debian-based machine able to
# run the platform (system packages, PostgreSQL, Redis, RabbitMQ, the virtualenv). Sourced.
# Every step checks first and does nothing when the machine already has what it needs.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
DEV="$ROOT/.dev"
PY="$VENV/bin/python"

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

port_open() { # host port
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_port() { # name host port seconds
    local i
    for ((i = 0; i < $4 * 4; i++)); do
        port_open "$2" "$3" && return 0
        sleep 0.25
    done
    log "$1 did not open $2:$3 within $4 s"
    return 1
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    log "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_system_packages() {
    local missing=()
    command -v python3 >/dev/null || missing+=(python3)
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
    command -v git >/dev/null || missing+=(git)
    # The RNG benchmark runs the dieharder battery over raw generator output.
    command -v dieharder >/dev/null || missing+=(dieharder)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        log "Python 3.11 or newer is required (found $(python3 --version))"
        exit 1
    }
}

ensure_postgres() {
    if ! port_open 127.0.0.1 5432; then
        log "starting PostgreSQL"
        local version
        version="$(ls /etc/postgresql | sort -V | tail -n 1)"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
        wait_port PostgreSQL 127.0.0.1 5432 60
    fi
}

ensure_redis() {
    if ! port_open 127.0.0.1 6379; then
        log "starting Redis"
        as_root mkdir -p /var/lib/redis /var/log/redis
        as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
            --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
        wait_port Redis 127.0.0.1 6379 30
    fi
}

ensure_rabbitmq() {
    if ! port_open 127.0.0.1 5672; then
        log "starting RabbitMQ"
        as_root rabbitmq-server -detached
        wait_port RabbitMQ 127.0.0.1 5672 120
    fi
    # Tests and benchmarks publish events too: each gets a virtual host of its own, so their
    # events never reach the dev stack's queues (as the database is casino vs casino_test).
    local vhosts vhost
    vhosts="$(as_root rabbitmqctl -q list_vhosts name 2>/dev/null || true)"
    for vhost in casino_test casino_bench; do
        if ! grep -qx "$vhost" <<<"$vhosts"; then
            log "creating RabbitMQ virtual host $vhost"
            as_root rabbitmqctl -q add_vhost "$vhost" >/dev/null
        fi
    done
}

ensure_rabbitmq_user() {
    # The platform's RabbitMQ user (dev stack, tests, benchmarks), with the password
    # ensure_dev_material generated: set on every run, so the broker always has the file's.
    # rabbitmqctl reads it from stdin, keeping it off the process list.
    local user=casino pw users grants vhost
    pw="$(cat "$DEV/secrets/rabbitmq/$user")"
    users="$(as_root rabbitmqctl -q list_users | cut -f1)"
    if grep -qx "$user" <<<"$users"; then
        as_root rabbitmqctl -q change_password "$user" <<<"$pw" >/dev/null
    else
        log "creating RabbitMQ user $user"
        as_root rabbitmqctl -q add_user "$user" <<<"$pw" >/dev/null
    fi
    grants="$(as_root rabbitmqctl -q list_user_permissions "$user" | cut -f1)"
    for vhost in / casino_test casino_bench; do
        if ! grep -qx -- "$vhost" <<<"$grants"; then
            as_root rabbitmqctl -q set_permissions -p "$vhost" "$user" ".*" ".*" ".*" >/dev/null
        fi
    done
}

ensure_venv() {
    if [ ! -x "$PY" ]; then
        log "creating virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
    # Reinstall only when the dependency declaration changed.
    local stamp="$VENV/.installed" want
    want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing Python packages"
        "$PY" -m pip install -q --upgrade pip >/dev/null
        "$PY" -m pip install -q -e "$ROOT[dev]"
        echo "$want" >"$stamp"
    fi
}

ensure_dev_material() {
    # Development CA, one certificate per service identity, database role passwords and the
    # RabbitMQ user's.
    "$PY" -m services.runtime.devpki --out "$DEV/pki" >/dev/null
    "$PY" -m services.runtime.dbsetup secrets --out "$DEV/secrets" >/dev/null
}

bootstrap() {
    ensure_system_packages
    ensure_postgres
    ensure_redis
    ensure_rabbitmq
    ensure_venv
    # The passwords are generated here, with the virtualenv: the accounts come after.
    ensure_dev_material
    ensure_pg_admin
    ensure_rabbitmq_user
}

ensure_pg_admin() {
    # The platform's migration role. Created through the postgres OS account (peer auth on
    # the socket works on a stock Debian install); its password lives in a file.
    local pw
    pw="$(cat "$DEV/secrets/postgres/casino_admin")"
    (cd / && as_root runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d postgres >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'casino_admin') THEN
    CREATE ROLE casino_admin LOGIN SUPERUSER;
  END IF;
END \$\$;
ALTER ROLE casino_admin PASSWORD '$pw';
SQL
    )
}
