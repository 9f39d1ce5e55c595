package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
	"github.com/plcdir/plc/watch"
)

const watchUsage = "plc watch add|list|remove|enable [--db DB] ..."

// runWatch manages the webhooks plc serve and plc mirror deliver.
func runWatch(ctx context.Context, e env, args []string) int {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprintf(e.Stderr, `Usage: %s

Registers webhooks: plc serve and plc mirror POST each new op of the DID
to the URL, as JSON signed with the directory's webhook key (GET
/_watch/key), retried with backoff, in order, from the op after the last
one the receiver took.

  add --did DID --url URL   register URL for DID's ops from now on
  list [--json]             the webhooks, their cursors and failures
  remove ID                 delete webhook ID
  enable ID                 resume webhook ID after its attempts ran out
                            (from the op it failed at)

Run 'plc watch COMMAND -h' for a command's flags.
`, watchUsage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	switch args[0] {
	case "add":
		return runWatchAdd(ctx, e, args[1:])
	case "list":
		return runWatchList(ctx, e, args[1:])
	case "remove", "enable":
		return runWatchID(ctx, e, args[0], args[1:])
	}
	return e.Failf(exitUsage, "plc watch: unknown command %q\nUsage: %s", args[0], watchUsage)
}

// openWebhooks opens the database db and its webhooks.
func openWebhooks(ctx context.Context, db string) (oplog.Store, oplog.WebhookStore, error) {
	store, _, err := oplog.Open(ctx, db)
	if err != nil {
		return nil, nil, err
	}
	ws, ok := oplog.WebhooksOf(store)
	if !ok {
		store.Close()
		return nil, nil, errors.New("the store keeps no webhooks")
	}
	return store, ws, nil
}

func runWatchAdd(ctx context.Context, e env, args []string) int {
	var db, did, u string
	fs := cli.NewFlagSet("watch add", "plc watch add [--db DB] --did DID --url URL",
		`Registers URL (http or https) for the ops of DID committed from now on.
Prints the webhook's id.`, e)
	f := cli.NewFlags(fs, e)
	f.DB(&db)
	fs.StringVar(&did, "did", "", "the DID to watch (required)")
	fs.StringVar(&u, "url", "", "the receiver's URL, http or https (required)")
	if code, done := f.Parse("plc watch add", args); done {
		return code
	}
	if fs.NArg() > 0 {
		return e.Failf(exitUsage, "plc watch add: unexpected argument %q", fs.Arg(0))
	}
	if !validate.ValidDID(did) {
		return e.Failf(exitUsage, "plc watch add: --did %q: not a did:plc DID", did)
	}
	if err := watch.CheckURL(u); err != nil {
		return e.Failf(exitUsage, "plc watch add: --url: %v", err)
	}
	store, ws, err := openWebhooks(ctx, db)
	if err != nil {
		return e.Failf(exitFailure, "plc watch add: %v", err)
	}
	defer store.Close()
	h, err := ws.AddWebhook(ctx, did, u, watch.MaxWebhooksPerDID, watch.MaxWebhooks, time.Now())
	switch {
	case errors.Is(err, oplog.ErrWebhookExists):
		return e.Failf(exitFailure, "plc watch add: %s already has a webhook to %s (plc watch list)", did, u)
	case errors.Is(err, oplog.ErrWebhookLimit):
		return e.Failf(exitFailure, "plc watch add: too many webhooks: at most %d per DID and %d in all; remove one first (plc watch remove)", watch.MaxWebhooksPerDID, watch.MaxWebhooks)
	case err != nil:
		return e.Failf(exitFailure, "plc watch add: %v", err)
	}
	fmt.Fprintf(e.Stdout, "webhook %d: %s → %s, from the op after seq %d\n", h.ID, h.DID, h.URL, h.Cursor)
	return exitOK
}

func runWatchList(ctx context.Context, e env, args []string) int {
	var (
		db     string
		asJSON bool
	)
	fs := cli.NewFlagSet("watch list", "plc watch list [--db DB] [--json]",
		`Lists the webhooks: id, DID, URL, cursor (the last seq delivered or
passed), failed attempts in a row, state and last error.`, e)
	f := cli.NewFlags(fs, e)
	f.DB(&db)
	fs.BoolVar(&asJSON, "json", false, "one JSON object per webhook")
	if code, done := f.Parse("plc watch list", args); done {
		return code
	}
	if fs.NArg() > 0 {
		return e.Failf(exitUsage, "plc watch list: unexpected argument %q", fs.Arg(0))
	}
	store, ws, err := openWebhooks(ctx, db)
	if err != nil {
		return e.Failf(exitFailure, "plc watch list: %v", err)
	}
	defer store.Close()
	hooks, err := ws.Webhooks(ctx)
	if err != nil {
		return e.Failf(exitFailure, "plc watch list: %v", err)
	}
	if asJSON {
		enc := json.NewEncoder(e.Stdout)
		for _, h := range hooks {
			enc.Encode(webhookJSON{h.ID, h.DID, h.URL, h.Cursor, h.CreatedAt.Format(time.RFC3339), h.Failures, h.Disabled, h.LastError})
		}
		return exitOK
	}
	tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDID\tURL\tCURSOR\tFAILURES\tSTATE\tLAST ERROR")
	for _, h := range hooks {
		state := "active"
		if h.Disabled {
			state = "disabled"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%s\n", h.ID, h.DID, h.URL, h.Cursor, h.Failures, state, h.LastError)
	}
	tw.Flush()
	return exitOK
}

// webhookJSON is a line of plc watch list --json.
type webhookJSON struct {
	ID        int64  `json:"id"`
	DID       string `json:"did"`
	URL       string `json:"url"`
	Cursor    int64  `json:"cursor"`
	CreatedAt string `json:"createdAt"`
	Failures  int    `json:"failures"`
	Disabled  bool   `json:"disabled"`
	LastError string `json:"lastError"`
}

func runWatchID(ctx context.Context, e env, cmd string, args []string) int {
	var db string
	help := map[string]string{
		"remove": "Deletes the webhook ID: nothing more is delivered to it.",
		"enable": "Resumes the webhook ID after its attempts ran out, from the op it\nfailed at.",
	}[cmd]
	fs := cli.NewFlagSet("watch "+cmd, "plc watch "+cmd+" [--db DB] ID", help, e)
	f := cli.NewFlags(fs, e)
	f.DB(&db)
	if code, done := f.Parse("plc watch "+cmd, args); done {
		return code
	}
	if fs.NArg() != 1 {
		return e.Failf(exitUsage, "plc watch %s: want exactly one webhook ID (plc watch list)", cmd)
	}
	id, err := strconv.ParseInt(fs.Arg(0), 10, 64)
	if err != nil || id < 1 {
		return e.Failf(exitUsage, "plc watch %s: %q is not a webhook ID (plc watch list)", cmd, fs.Arg(0))
	}
	store, ws, err := openWebhooks(ctx, db)
	if err != nil {
		return e.Failf(exitFailure, "plc watch %s: %v", cmd, err)
	}
	defer store.Close()
	if cmd == "remove" {
		err = ws.RemoveWebhook(ctx, id)
	} else {
		err = ws.EnableWebhook(ctx, id)
	}
	if errors.Is(err, oplog.ErrNotFound) {
		return e.Failf(exitFailure, "plc watch %s: no webhook %d (plc watch list)", cmd, id)
	}
	if err != nil {
		return e.Failf(exitFailure, "plc watch %s: %v", cmd, err)
	}
	fmt.Fprintf(e.Stdout, "webhook %d %sd\n", id, cmd)
	return exitOK
}

// webhookKeyPath is the webhook key file of c: --webhook-key, else
// webhook.key in the data directory.
func webhookKeyPath(c *serveConfig) string {
	if c.WebhookKey != "" {
		return c.WebhookKey
	}
	return filepath.Join(dataDir(c.DB), "webhook.key")
}
