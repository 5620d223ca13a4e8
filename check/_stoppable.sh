# Sourced by the GPU scripts (bench/gpu_all.sh, bench/gpu_bench.sh, check/gpu_check.sh,
# check/gpu_sanitize.sh): runs their long commands so that Ctrl-C, SIGTERM and SIGHUP stop them.
#
# GNU timeout puts its command in a process group of its own, so a Ctrl-C typed at the
# terminal never reaches it, and bash runs a trap only once the command in the foreground has
# ended: a script that runs `timeout … deno …` in the foreground ignores Ctrl-C until the
# limit. Here each command runs in the background while the script waits for it, which a
# signal interrupts. The trap then sends SIGTERM to the command (timeout passes it on to its
# whole group; a script run this way passes it on to its own command), waits up to
# STOPPABLE_GRACE seconds (default 10), kills what is left with SIGKILL, and exits 128 + the
# signal's number (130 for Ctrl-C).

STOPPABLE_GRACE=${STOPPABLE_GRACE:-10}
# Whole seconds, at least 2 (a nested script gets 3 fewer, at least 1); anything else: 10.
case $STOPPABLE_GRACE in '' | *[!0-9]*) STOPPABLE_GRACE=10 ;; esac
[ "$STOPPABLE_GRACE" -ge 2 ] || STOPPABLE_GRACE=2
_stoppable_pid=
# The script's own stderr, for the message: where the trap runs, stderr may be a log file.
exec {_stoppable_err}>&2

# stoppable COMMAND...: runs COMMAND and returns its exit status; a signal to this shell stops it.
# A script run this way gets a grace 3 s shorter (at least 1 s), so that it has killed what it
# runs before this shell's own grace ends; the saved stderr is not passed on.
stoppable() {
  local rc=0
  STOPPABLE_GRACE=$((STOPPABLE_GRACE > 4 ? STOPPABLE_GRACE - 3 : 1)) "$@" {_stoppable_err}>&- &
  _stoppable_pid=$!
  wait "$_stoppable_pid" || rc=$?
  _stoppable_pid=
  return $rc
}

# _stoppable_stop NAME CODE: the trap of signal NAME. Nothing in it may end the shell before
# the command is stopped: not `set -e` (a caller's), nor a write to a closed pipe or a full
# disk (the message goes last, its failure ignored).
_stoppable_stop() {
  set +e
  trap '' INT TERM HUP PIPE
  # A signal just after the command started, before its pid was kept: this shell's last job.
  local pid=${_stoppable_pid:-$(jobs -p | tail -1)} waited=0
  if [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; then
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((STOPPABLE_GRACE * 10)) ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    # timeout leads a group of its own: kill the group; a script run by stoppable, the process.
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || :
    wait "$pid" 2>/dev/null || :
  fi
  { echo "$(basename "$0"): stopped by SIG$1"; } >&"$_stoppable_err" 2>/dev/null || :
  exit "$2"
}
trap '_stoppable_stop INT 130' INT
trap '_stoppable_stop TERM 143' TERM
trap '_stoppable_stop HUP 129' HUP
