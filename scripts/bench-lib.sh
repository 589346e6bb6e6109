# Helpers shared by the benchmark scripts; sourced, not run.

# A TCP port on 127.0.0.1 free at the moment of asking.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Resident memory of a process, kB.
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# User + system CPU clock ticks of a process so far (proc(5): fields 14, 15;
# the command name in field 2 may hold spaces, hence the cut at ") ").
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
