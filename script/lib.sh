# Shared helpers for script/test, script/demo, script/package and script/bench. Source it; it defines functions only.
# Every helper either gets the machine into the state it names or fails with a message
# that says what to do: nothing is skipped silently.

# The calling script's name, for messages ("script/test: ...").
BERTH_SCRIPT=${BERTH_SCRIPT:-script/${0##*/}}

die() {
  echo "$BERTH_SCRIPT: $*" >&2
  exit 1
}

# A header a person can spot in a long log.
stage() {
  printf '\n==> %s\n' "$*"
}

is_root() {
  [[ $(id -u) -eq 0 ]]
}

# ensure_docker: a Docker engine answers `docker info`, starting dockerd when we can.
# A dockerd started here keeps running after the script (the engine is the machine's,
# not the test run's); its log stays in the temp dir printed below.
ensure_docker() {
  command -v docker >/dev/null 2>&1 ||
    die "no docker command: install Docker (Debian: apt-get install docker.io)"
  docker info >/dev/null 2>&1 && return 0
  if [[ -z ${DOCKER_HOST:-} ]] && is_root && command -v dockerd >/dev/null 2>&1; then
    local log
    log="$(mktemp -d "${TMPDIR:-/tmp}/berth-dockerd.XXXXXX")/dockerd.log"
    echo "$BERTH_SCRIPT: no Docker engine answers; starting dockerd (log: $log)" >&2
    # Own session and no inherited descriptors: it must not hold the caller's pipes open.
    setsid dockerd </dev/null >"$log" 2>&1 &
    local pid=$! i
    for ((i = 0; i < 60; i++)); do
      docker info >/dev/null 2>&1 && return 0
      kill -0 "$pid" 2>/dev/null || break # it exited: no point waiting
      sleep 0.5
    done
    echo "$BERTH_SCRIPT: dockerd did not come up; last lines of $log:" >&2
    tail -n 20 "$log" >&2 || true
  fi
  die "no Docker engine: the integration tests need one; start dockerd or set DOCKER_HOST"
}

# ensure_debs PACKAGE...: installs the Debian packages that are missing, with one
# `apt-get update` first, and only when something is missing. Services a package would
# start are not started (berth's tests start their own instances).
ensure_debs() {
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  is_root || die "missing Debian package(s): ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
  command -v apt-get >/dev/null 2>&1 ||
    die "missing package(s) ${missing[*]} and no apt-get to install them"
  echo "$BERTH_SCRIPT: installing ${missing[*]}"
  # A policy-rc.d that says 101 keeps maintainer scripts from starting services
  # (docker-registry would otherwise start one). Only ours is removed afterwards.
  local policy=/usr/sbin/policy-rc.d ours=''
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && ours=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >/dev/null || rc=$?
  [[ -n $ours ]] && rm -f "$policy"
  ((rc == 0)) || die "apt-get install ${missing[*]} failed (exit $rc)"
}

# ensure_moto_server: `moto_server` (PyPI moto[server], the ECR API stand-in) is on PATH.
ensure_moto_server() {
  command -v moto_server >/dev/null 2>&1 && return 0
  command -v python3 >/dev/null 2>&1 || die "moto_server is missing and there is no python3 to install it"
  echo "$BERTH_SCRIPT: installing moto[server] from PyPI"
  local out
  if ! out=$(python3 -m pip install --quiet --disable-pip-version-check 'moto[server]' 2>&1); then
    if [[ $out == *externally-managed-environment* ]]; then
      # Debian's own python3 (PEP 668): a throwaway CI machine may install into it.
      python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'moto[server]' ||
        die "pip install 'moto[server]' failed"
    else
      printf '%s\n' "$out" >&2
      die "pip install 'moto[server]' failed"
    fi
  fi
  # pyenv puts new console scripts on PATH only after a rehash.
  command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1
  hash -r
  command -v moto_server >/dev/null 2>&1 ||
    die "moto[server] installed but moto_server is not on PATH ($(python3 -m site --user-base 2>/dev/null)/bin?)"
}

# build_static: the statically linked release binaries the .deb, the image and the static
# download carry, built in their own target dir (so the normal release build stays valid);
# prints the path of `berth`, beside which `berth-agentd` (the agent daemon `berth agent`
# hands over to) is built. An explicit --target keeps build scripts and proc-macros dynamic
# (crt-static applies to the target only); git2's HTTPS transport links Debian's
# libssl.a/libcrypto.a (libssl-dev).
build_static() {
  local triple=x86_64-unknown-linux-gnu target_dir=target/static built b
  OPENSSL_STATIC=1 RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --quiet --target "$triple" --target-dir "$target_dir" >&2
  built=$target_dir/$triple/release/berth
  for b in "$built" "${built%/*}/berth-agentd"; do
    file -L "$b" | grep -Eq 'static(-pie)? linked' || die "not statically linked: $(file -L "$b")"
  done
  echo "$built"
}
