package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/plcdir/plc/bundle"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/tlog"
)

// bundleCheck is how bundles are checked: the log's verifier key and an
// optional witness policy file.
type bundleCheck struct {
	VKey          string
	WitnessPolicy string
}

// bundleImportFlags binds plc import's flags for a bundle folder.
func bundleImportFlags(f *cli.Flags) *bundleCheck {
	var b bundleCheck
	f.Str(&b.VKey, "vkey", "PLC_IMPORT_VKEY", "", "a bundle folder's log's checkpoint verifier key (required for a folder)")
	f.Str(&b.WitnessPolicy, "witness-policy", "PLC_IMPORT_WITNESS_POLICY", "", "a bundle folder's checkpoint must carry the cosignatures this witness policy's quorum needs")
	return &b
}

// options are the bundle reader's options.
func (b *bundleCheck) options(flag string) (bundle.Options, error) {
	if strings.TrimSpace(b.VKey) == "" {
		return bundle.Options{}, fmt.Errorf("%svkey VKEY is required: the log's checkpoint verifier key, which the bundles are checked against", flag)
	}
	if _, err := tlog.NewVerifier(b.VKey); err != nil {
		return bundle.Options{}, fmt.Errorf("%svkey: %v", flag, err)
	}
	opts := bundle.Options{VKey: b.VKey}
	if b.WitnessPolicy != "" {
		p, err := tlog.ReadPolicyFile(b.WitnessPolicy)
		if err != nil {
			return opts, fmt.Errorf("%switness-policy: %v", flag, err)
		}
		if err := p.CheckLog(b.VKey); err != nil {
			return opts, fmt.Errorf("%switness-policy: %v", flag, err)
		}
		opts.Policy = p
	}
	return opts, nil
}

// isBundleFolder reports whether path is a folder with a bundle index.
func isBundleFolder(path string) bool {
	fi, err := os.Stat(filepath.Join(path, bundle.IndexName))
	return err == nil && fi.Mode().IsRegular()
}

// bundleFetcher is the bundle folder at src: a URL or a folder.
func bundleFetcher(src string) (bundle.Fetcher, error) {
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		c, err := client.New(src, nil)
		if err != nil {
			return nil, err
		}
		return bundle.Remote{C: c}, nil
	}
	if !isBundleFolder(src) {
		return nil, fmt.Errorf("%s is not a bundle folder (no %s in it)", src, bundle.IndexName)
	}
	return bundle.Dir(src), nil
}

// importBundles imports the bundle folder c.Input: each bundle once it is
// checked against the folder's checkpoint, through the import's pipeline.
func importBundles(ctx context.Context, c importConfig, b *bundleCheck, e env) int {
	opts, err := b.options("--")
	if err != nil {
		return e.Failf(exitUsage, "plc import: %v", err)
	}
	r, err := bundle.Open(ctx, bundle.Dir(c.Input), opts)
	if err != nil {
		return e.Failf(exitUsage, "plc import: %s: %v", c.Input, err)
	}
	defer r.Close()
	var size int64
	for _, x := range r.Index().Bundles {
		size += x.ContentBytes
	}
	cs := &countingSource{LineSource: r}
	return importFrom(ctx, c, e, c.Input, cs, size, &cs.n)
}

// countingSource counts the bytes of the lines handed over, each with its
// newline.
type countingSource struct {
	oplog.LineSource
	n atomic.Int64
}

func (c *countingSource) Next(ctx context.Context) (oplog.Line, error) {
	l, err := c.LineSource.Next(ctx)
	if err == nil {
		c.n.Add(int64(len(l.Raw)) + 1)
	}
	return l, err
}

// bootstrapFlags binds plc mirror's --bootstrap flags.
func bootstrapFlags(f *cli.Flags) (src *string, b *bundleCheck) {
	src, b = new(string), new(bundleCheck)
	f.Str(src, "bootstrap", "PLC_MIRROR_BOOTSTRAP", "", "a bundle folder (a path or an http(s) URL) of the upstream's log to start from (see plc export --bundles)")
	f.Str(&b.VKey, "bootstrap-vkey", "PLC_MIRROR_BOOTSTRAP_VKEY", "", "the upstream's checkpoint verifier key, which the bundles are checked against (required with --bootstrap)")
	f.Str(&b.WitnessPolicy, "bootstrap-witness-policy", "PLC_MIRROR_BOOTSTRAP_WITNESS_POLICY", "", "the bundles' checkpoint must carry the cosignatures this witness policy's quorum needs")
	return src, b
}

// bootstrap imports the bundle folder src into log under the mirror's
// cursor source, each bundle once checked, unless the mirror's cursor is
// already past them; the mirror then goes on from the cursor.
func bootstrap(ctx context.Context, src string, opts bundle.Options, log *oplog.Log, source string, p *progress, logger *slog.Logger) error {
	f, err := bundleFetcher(src)
	if err != nil {
		return err
	}
	r, err := bundle.Open(ctx, f, opts)
	if err != nil {
		return fmt.Errorf("bootstrap from %s: %w", f, err)
	}
	defer r.Close()
	c, err := log.Store().Cursor(ctx, source)
	if err != nil {
		return err
	}
	if c.Seq >= r.LastSeq() {
		logger.Info("bootstrap: the mirror is already past the bundles", "cursor", c.Seq, "bundles", r.LastSeq())
		return nil
	}
	logger.Info("bootstrap", "from", f.String(), "bundles", len(r.Index().Bundles), "lastSeq", r.LastSeq(), "checkpoint", r.Checkpoint().Size)
	st, err := oplog.ImportLines(ctx, log, r, oplog.ImportOptions{Source: source, Progress: p.batch, Rejected: p.rejected})
	if err != nil {
		return fmt.Errorf("bootstrap from %s: %w", f, err)
	}
	logger.Info("bootstrap done", "imported", st.Imported, "rejected", st.Rejected, "skipped", st.Skipped)
	return nil
}
