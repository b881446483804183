#!/bin/bash
# Prints the istgt configuration xenft's tests and labs serve a shared LUN with: one logical
# unit (DIR/lun0.img, which the caller creates), no authentication, every initiator of NETMASK,
# the unit-control port on CONTROL_PORTAL (pick a free one: several targets may run at once).
#
# usage: tests/istgt_conf.sh DIR NODEBASE TARGET PORTAL NETMASK CONTROL_PORTAL SIZE_MB
#   e.g. tests/istgt_conf.sh /tmp/lun iqn.2026-11.demo.xenft shared 10.99.0.1:3260 10.99.0.0/24 127.0.0.1:3261 16
#   serves iscsi://10.99.0.1:3260/iqn.2026-11.demo.xenft:shared/0
set -eu
[ $# -eq 7 ] || { echo "usage: $0 DIR NODEBASE TARGET PORTAL NETMASK CONTROL_PORTAL SIZE_MB" >&2; exit 2; }
dir=$1 nodebase=$2 target=$3 portal=$4 netmask=$5 control=$6 size_mb=$7
[ -e "$dir/auth.conf" ] || : > "$dir/auth.conf"
cat <<EOF
[Global]
  NodeBase "$nodebase"
  PidFile $dir/istgt.pid
  AuthFile $dir/auth.conf
  MediaDirectory $dir
  LogFacility "local7"
  Timeout 30
  NopInInterval 20
  DiscoveryAuthMethod None
  MaxSessions 16
  MaxConnections 4
[UnitControl]
  AuthMethod None
  Portal UC1 $control
  Netmask ${control%%:*}
[PortalGroup1]
  Portal DA1 $portal
[InitiatorGroup1]
  InitiatorName "ALL"
  Netmask $netmask
[LogicalUnit1]
  TargetName $target
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  UseDigest Auto
  UnitType Disk
  LUN0 Storage $dir/lun0.img ${size_mb}MB
EOF
