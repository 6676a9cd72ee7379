# shellcheck shell=bash
# Shared by the tests/vm/* scripts: installing QEMU, running a guest under a hard timeout
# with its serial console logged to a file, talking to that console, and failing clearly.

fail() {
  echo "${0##*/}: FAIL: $*" >&2
  [[ -n "${LOG:-}" ]] && echo "${0##*/}: console log: $LOG" >&2
  exit 1
}
note() { echo "${0##*/}: $*" >&2; }

# ensure_packages PKG...: installs the Debian packages that are missing, in one apt-get
# line. With QEMU: installing qemu-system-x86 alone removes qemu-utils, so both go in one
# line; and a newer qemu-utils (a backport) Breaks bookworm's qemu-system-common, so if the
# plain line fails, the release's own qemu-utils is taken.
ensure_packages() {
  local p missing=()
  for p in "$@"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [[ " ${missing[*]} " != *" qemu-system-x86 "* || " ${missing[*]} " == *" qemu-utils "* ]] ||
    missing+=(qemu-utils)
  note "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine has no package lists yet.
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || apt-get update -qq ||
    fail "apt-get update failed"
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    local release
    release=$(. /etc/os-release && echo "$VERSION_CODENAME")
    apt-get install -y -qq --no-install-recommends --allow-downgrades \
      "${missing[@]/#qemu-utils/qemu-utils/$release}" >/dev/null ||
      fail "could not install ${missing[*]}"
  fi
}

# Where a test keeps its logs and scratch files: a fresh directory per run.
make_run_dir() {
  local base=${TEST_RUN_DIR:-/tmp/nixos-autoinstall-tests}
  mkdir -p "$base"
  # shellcheck disable=SC2034 # read by the test scripts
  RUN_DIR=$(mktemp -d "$base/$1.XXXXXX")
}

# keep_logs_only: after a pass, everything a test wrote besides its logs and reports goes
# (sticks, disks, caches, copies of environments: hundreds of MB each), so that a whole run
# fits in the disk space a CI machine has free. A failing test keeps all for a look. -xdev:
# never into a file system still mounted below (a chroot's /dev, say).
keep_logs_only() {
  find "$RUN_DIR" -xdev -mindepth 1 \( -type f ! -name '*.log' ! -name '*.txt' ! -name '*.json' -delete \) \
    -o \( -type d -empty -delete \)
}

# start_vm LOG TIMEOUT QEMU-ARGS...: starts $QEMU (qemu-system-x86_64 unless set) in the background under
# `timeout`, its console (stdio: -nographic) appended to LOG and its input read from a FIFO
# that stays open on fd 7 (send_console writes there). Sets VM_PID. No KVM here: TCG only.
start_vm() {
  LOG=$1
  local limit=$2
  shift 2
  local fifo
  fifo=$(mktemp -u "${LOG%.log}.in.XXXXXX")
  mkfifo "$fifo"
  exec 7<>"$fifo" # read-write: opening does not block, and qemu never sees end of input
  rm -f "$fifo"
  : >"$LOG"
  VM_START=$SECONDS
  timeout -k 5 "$limit" "${QEMU:-qemu-system-x86_64}" "$@" <&7 >>"$LOG" 2>&1 &
  VM_PID=$!
  trap 'stop_vm; stop_nginx' EXIT
}

stop_vm() {
  if [[ -n "${VM_PID:-}" ]] && kill -0 "$VM_PID" 2>/dev/null; then
    kill "$VM_PID" 2>/dev/null || true
    wait "$VM_PID" 2>/dev/null || true
  fi
  VM_PID=""
}

# console_has PATTERN: the console log matches PATTERN (grep -E; serial CRs dropped first).
# (Not `tr | grep -q`: under pipefail, tr's SIGPIPE when grep stops early reads as failure.)
console_has() { grep -qE -- "$1" < <(tr -d '\r' <"$LOG"); }

# wait_console PATTERN SECONDS: waits until the console log matches PATTERN (grep -E).
wait_console() {
  local deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    console_has "$1" && return 0
    kill -0 "$VM_PID" 2>/dev/null || { console_has "$1"; return; }
    sleep 0.5
  done
  return 1
}

send_console() { printf '%s\n' "$@" >&7; }

# console_count PATTERN: how many times PATTERN (grep -E) occurs on the console so far.
console_count() { grep -oE -- "$1" < <(tr -d '\r' <"$LOG") | wc -l; }

# console_cmd PROMPT SECONDS COMMAND: types COMMAND at a shell on the console and waits for
# the next PROMPT (grep -E). One line at a time, only when the shell waits at its prompt:
# a burst typed ahead while commands run got lost in the emulated UART here.
console_cmd() {
  local prompt=$1 limit=$2 cmd=$3 before deadline
  before=$(console_count "$prompt")
  send_console "$cmd"
  deadline=$((SECONDS + limit))
  while (($(console_count "$prompt") <= before)); do
    ((SECONDS < deadline)) || return 1
    kill -0 "$VM_PID" 2>/dev/null || return 1
    sleep 0.3
  done
}

# wait_vm SECONDS: waits for the guest to end (it powers off); returns qemu's status.
wait_vm() {
  local deadline=$((SECONDS + $1))
  while kill -0 "$VM_PID" 2>/dev/null; do
    ((SECONDS < deadline)) || return 124
    sleep 0.5
  done
  local rc=0
  wait "$VM_PID" || rc=$?
  VM_PID=""
  # shellcheck disable=SC2034 # read by the test scripts
  VM_SECONDS=$((SECONDS - VM_START))
  return "$rc"
}

# expect PATTERN WHAT: the console log must match PATTERN (grep -E), else fail with WHAT.
expect() {
  console_has "$1" || fail "$2 (no match for /$1/ on the console)"
}

# start_nginx DIR [CERT KEY]: serves DIR on 127.0.0.1 (a free port, NGINX_PORT), read-only but
# for the reports online installers PUT under autoinstall/reports/, with
# a real nginx, a child of this script with its pid, logs and temp files under RUN_DIR/nginx;
# stopped on exit. With a certificate and key (PEM), also over HTTPS on NGINX_TLS_PORT. (The
# guest reaches them as 10.0.2.2:PORT through QEMU's user network.)
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
start_nginx() {
  local dir=$1 cert=${2:-} key=${3:-} prefix=$RUN_DIR/nginx tls=""
  mkdir -p "$prefix"
  NGINX_PORT=$(free_port)
  if [[ -n "$cert" ]]; then
    NGINX_TLS_PORT=$(free_port)
    tls="listen 127.0.0.1:$NGINX_TLS_PORT ssl; ssl_certificate $cert; ssl_certificate_key $key;"
  fi
  cat >"$prefix/nginx.conf" <<CONF
master_process off;
worker_processes 1;
pid $prefix/nginx.pid;
error_log $prefix/error.log;
events { worker_connections 64; }
http {
  access_log $prefix/access.log;
  client_body_temp_path $prefix/body;
  proxy_temp_path $prefix/proxy;
  fastcgi_temp_path $prefix/fastcgi;
  uwsgi_temp_path $prefix/uwsgi;
  scgi_temp_path $prefix/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGINX_PORT; $tls root $dir;
    # Online installers send their reports here (WebDAV PUT); mkinstaller reports lists them.
    location /autoinstall/reports/ {
      dav_methods PUT; create_full_put_path on; autoindex on; autoindex_format json;
    }
  }
}
CONF
  nginx -c "$prefix/nginx.conf" -p "$prefix" -g 'daemon off;' &
  NGINX_PID=$!
  trap 'stop_vm; stop_nginx' EXIT
  local n=0
  until (: <"/dev/tcp/127.0.0.1/$NGINX_PORT") 2>/dev/null; do
    ((n++ < 100)) || fail "nginx did not listen on 127.0.0.1:$NGINX_PORT: $(cat "$prefix/error.log")"
    sleep 0.1
  done
}

stop_nginx() {
  if [[ -n "${NGINX_PID:-}" ]]; then
    kill "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=""
  fi
}
