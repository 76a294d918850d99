#!/bin/sh
# Print "PID NAME (COMMAND LINE) holds LOCK" for every process holding one of apt's or dpkg's
# locks (fcntl locks, as apt takes them, listed in /proc/locks); print nothing when all are free.
for lock in /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock; do
  [ -e "$lock" ] || continue
  inode=$(stat -c %i "$lock")
  # /proc/locks: "N: POSIX ADVISORY WRITE PID MAJ:MIN:INODE START END" ("N: -> ..." for waiters)
  awk -v inode="$inode" '$2 != "->" { split($6, id, ":"); if (id[3] == inode) print $5 }' /proc/locks |
    sort -u | while read -r pid; do
      [ -r "/proc/$pid/comm" ] || continue
      cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" | sed 's/ *$//')
      echo "$pid $(cat "/proc/$pid/comm") ($cmdline) holds $lock"
    done
done
