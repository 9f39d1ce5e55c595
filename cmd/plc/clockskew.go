package main

import (
	"errors"
	"time"

	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/oplog"
)

// clockSkewFlag binds --max-clock-skew, shared by plc serve, plc mirror
// and plc import: how far ahead of this machine's clock an op's createdAt
// may be (see oplog.Options.MaxClockSkew).
func clockSkewFlag(f *cli.Flags, p *time.Duration) {
	f.Duration(p, "max-clock-skew", "PLC_MAX_CLOCK_SKEW", oplog.DefaultMaxClockSkew,
		"how far ahead of this clock a createdAt may be: replayed ops dated later are rejected; while the log's latest op is later, POST answers 503")
}

func validateClockSkew(d time.Duration) error {
	if d <= 0 {
		return errors.New("--max-clock-skew must be positive")
	}
	return nil
}
