# Shared by .ci/install-test and .ci/site-test: Debian roots made with mmdebstrap (cached, checked
# before use), free ports, ssh into a guest, waiting on a guest's condition. Source it; `say` and
# `work` (a scratch directory) are the caller's.

# drop_unreadable TAR: an interrupted or older run may have left a directory or a truncated file
# under a cached root's name; it is removed, to be made again.
drop_unreadable() {
  if [ -e "$1" ] && ! { [ -f "$1" ] && tar -tf "$1" >/dev/null 2>&1; }; then
    say "the cached root $1 is not a readable tar: making it again" >&2
    rm -rf "$1"
  fi
}

# cached_root NAME VARIANT INCLUDE: prints the path of a tar of a Debian bookworm root with
# INCLUDE's packages, made once and kept in ~/.cache/keel-roots (keyed by variant and packages).
cached_root() {
  local name="$1" variant="$2" include="$3" cache="$HOME/.cache/keel-roots"
  mkdir -p "$cache"
  local tar="$cache/$name-$(printf '%s %s' "$variant" "$include" | sha256sum | cut -c1-12).tar"
  drop_unreadable "$tar"
  if [ ! -e "$tar" ]; then
    say "making a Debian root with mmdebstrap ($name: $variant, $include)" >&2
    # mmdebstrap picks its output format from the file name unless told: `….tar.partial` would be
    # written as a directory (the fresh-machine failure of issue 30).
    rm -rf "$tar.partial"
    mmdebstrap --quiet --variant="$variant" --format=tar --include="$include" bookworm "$tar.partial" >&2
    tar -tf "$tar.partial" >/dev/null
    mv "$tar.partial" "$tar"
  fi
  printf '%s\n' "$tar"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ssh_to PORT KEY COMMAND…: runs a command as root in a guest whose sshd is forwarded to PORT.
ssh_to() {
  local port="$1" key="$2"
  shift 2
  ssh -q -i "$key" -p "$port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o ConnectTimeout=5 -o BatchMode=yes -o ServerAliveInterval=15 root@127.0.0.1 "$@"
}

# wait_for SECONDS PID LOG DESCRIPTION COMMAND: runs COMMAND (a shell function or program) until
# it succeeds; fails, with the end of LOG (the guest's console), after SECONDS or when PID (the
# guest's QEMU) exits.
wait_for() {
  local deadline=$((SECONDS + $1)) pid="$2" log="$3" what="$4"
  shift 4
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$pid" 2>/dev/null; then
      echo "timed out waiting for: $what" >&2
      tail -40 "$log" >&2
      return 1
    fi
    sleep 1
  done
}

# cached_command_root NAME COMMAND: prints the path of a tar made by COMMAND, an mmdebstrap command
# line (as a runbook gives it) whose last word is its target directory: run once here with that
# target replaced by the tar, and kept in ~/.cache/keel-roots (keyed by the command).
cached_command_root() {
  local name="$1" cmd="$2" cache="$HOME/.cache/keel-roots"
  mkdir -p "$cache"
  local tar="$cache/$name-$(printf '%s' "$cmd" | sha256sum | cut -c1-12).tar"
  drop_unreadable "$tar"
  if [ ! -e "$tar" ]; then
    say "making $name: $cmd" >&2
    rm -rf "$tar.partial"
    # The command is the repository's own (docs/contest-day.md): eval keeps its quoting.
    eval "${cmd% *} --quiet --format=tar \"\$tar.partial\"" >&2
    tar -tf "$tar.partial" >/dev/null
    mv "$tar.partial" "$tar"
  fi
  printf '%s\n' "$tar"
}
