#!/usr/bin/env bash
# Applies sysctl/99-wsloop.conf to this host, safely.
#
#   ./apply.sh                     dry run: shows each setting, current -> new
#   ./apply.sh --apply             saves the current values to a backup file,
#                                  then writes the new ones
#   ./apply.sh --revert FILE       writes back the values saved in FILE
#
# Options: --conf FILE (default: 99-wsloop.conf beside this script),
#          --backup FILE (default: ./sysctl-backup-<date>.conf).
# SYSCTL_ROOT (default /proc/sys) points it at another tree, for tests.
# Writing needs root; a dry run does not. Settings whose file does not exist
# (nf_conntrack_max without the module) are skipped and said so.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=${SYSCTL_ROOT:-/proc/sys}
conf="$here/99-wsloop.conf"
mode=dry
backup="./sysctl-backup-$(date +%Y%m%d-%H%M%S).conf"
revert_file=

die() { echo "apply.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --apply) mode=apply ;;
    --revert) mode=revert; revert_file=${2:-}; [ -n "$revert_file" ] || die "--revert needs a backup FILE"; shift ;;
    --conf) conf=${2:-}; [ -n "$conf" ] || die "--conf needs a FILE"; shift ;;
    --backup) backup=${2:-}; [ -n "$backup" ] || die "--backup needs a FILE"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (try --help)" ;;
  esac
  shift
done

if [ "$mode" != dry ] && [ "$(id -u)" -ne 0 ]; then
  die "writing kernel settings needs root: run it with sudo (a dry run, without --apply, does not)"
fi

# key = value lines of a sysctl.conf file, comments and blanks dropped,
# whitespace inside values squeezed to one space.
settings() {
  sed -e 's/#.*//' "$1" | awk -F= 'NF >= 2 {
    key=$1; sub(/^[ \t]+/, "", key); sub(/[ \t]+$/, "", key)
    val=substr($0, index($0, "=") + 1); gsub(/[ \t]+/, " ", val); sub(/^ /, "", val); sub(/ $/, "", val)
    print key "=" val }'
}

path_of() { echo "$root/$(echo "$1" | tr . /)"; }

# Limits where more is better: a host already above the value keeps its own.
AT_LEAST=" fs.file-max fs.nr_open net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.core.netdev_max_backlog net.netfilter.nf_conntrack_max "
keeps_own() { # key current new
  case "$AT_LEAST" in *" $1 "*) [ "$2" -ge "$3" ] 2>/dev/null ;; *) return 1 ;; esac
}
read_value() { tr -s ' \t' '  ' < "$1" | sed -e 's/^ //' -e 's/ $//'; }

case "$mode" in
  dry|apply)
    [ -f "$conf" ] || die "no such file: $conf"
    if [ "$mode" = apply ]; then
      : > "$backup" || die "cannot write the backup $backup"
      echo "# sysctl values before apply.sh --apply, $(date -u +%FT%TZ)" >> "$backup"
    fi
    changes=0
    while IFS='=' read -r key value; do
      file=$(path_of "$key")
      if [ ! -e "$file" ]; then
        printf '%-34s (not present on this host: skipped)\n' "$key"
        continue
      fi
      current=$(read_value "$file")
      if [ "$current" = "$value" ]; then
        printf '%-34s %s (already set)\n' "$key" "$current"
        continue
      fi
      if keeps_own "$key" "$current" "$value"; then
        printf '%-34s %s (above %s: kept)\n' "$key" "$current" "$value"
        continue
      fi
      changes=$((changes + 1))
      printf '%-34s %s -> %s\n' "$key" "$current" "$value"
      if [ "$mode" = apply ]; then
        echo "$key = $current" >> "$backup"
      fi
    done < <(settings "$conf")
    if [ "$mode" = dry ]; then
      echo "dry run: $changes setting(s) would change; nothing was written. Run with --apply to write them."
      exit 0
    fi
    # Backup first (above), then write.
    while IFS='=' read -r key value; do
      file=$(path_of "$key")
      [ -e "$file" ] || continue
      current=$(read_value "$file")
      [ "$current" = "$value" ] && continue
      keeps_own "$key" "$current" "$value" && continue
      printf '%s\n' "$value" > "$file" || die "cannot write $key (is it read-only in this namespace?)"
    done < <(settings "$conf")
    echo "applied $changes setting(s); previous values saved in $backup (undo: $0 --revert $backup)"
    ;;
  revert)
    [ -f "$revert_file" ] || die "no such backup file: $revert_file"
    n=0
    while IFS='=' read -r key value; do
      file=$(path_of "$key")
      [ -e "$file" ] || { echo "$key: not present, skipped"; continue; }
      printf '%s\n' "$value" > "$file" || die "cannot write $key"
      printf '%-34s restored to %s\n' "$key" "$value"
      n=$((n + 1))
    done < <(settings "$revert_file")
    echo "restored $n setting(s) from $revert_file"
    ;;
esac
