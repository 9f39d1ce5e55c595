package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/coder/websocket"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/internal/cli"
)

func runBenchExport(ctx context.Context, e cli.Env, args []string) int {
	fs := cli.NewFlagSet("bench export", "plc bench export --url URL",
		`Reads a running directory's whole log twice: paging through the seq-mode
/export (count=1000), then as a backfill of the /export/stream WebSocket
from cursor 0 up to the seq the paging ended at; reports ops/s for each.`, e)
	url := fs.String("url", "http://127.0.0.1:2582", "directory URL")
	if code, done := cli.ParseFlags(fs, args); done {
		return code
	}
	dir, err := client.New(*url, benchClient(1))
	if err != nil {
		return e.Failf(cli.ExitUsage, "plc bench export: %v", err)
	}

	start := time.Now()
	if _, err := exportDIDs(ctx, dir); err != nil {
		return e.Failf(cli.ExitFailure, "plc bench export: %v", err)
	}
	pageTime := time.Since(start)
	latest, err := dir.LatestSeq(ctx)
	if err != nil {
		return e.Failf(cli.ExitFailure, "plc bench export: %v", err)
	}
	if latest == 0 {
		return e.Failf(cli.ExitFailure, "plc bench export: the directory is empty")
	}

	start = time.Now()
	conn, err := dir.Stream(ctx, 0)
	if err != nil {
		return e.Failf(cli.ExitFailure, "plc bench export: stream: %v", err)
	}
	var seq int64
	for seq < latest {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			return e.Failf(cli.ExitFailure, "plc bench export: stream ended at seq %d of %d: %v", seq, latest, err)
		}
		ev, err := plc.ReadLineHead(msg)
		if err != nil || ev.Seq != seq+1 {
			return e.Failf(cli.ExitFailure, "plc bench export: stream event after seq %d: %v (seq %d)", seq, err, ev.Seq)
		}
		seq = ev.Seq
	}
	streamTime := time.Since(start)
	conn.Close(websocket.StatusNormalClosure, "")

	fmt.Fprintf(e.Stdout, "scenario         export\nops              %d\n/export paging   %.0f ops/s (%s)\nstream backfill  %.0f ops/s (%s)\n",
		latest, float64(latest)/pageTime.Seconds(), pageTime.Round(time.Millisecond),
		float64(latest)/streamTime.Seconds(), streamTime.Round(time.Millisecond))
	return cli.ExitOK
}
