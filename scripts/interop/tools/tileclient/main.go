// Command tileclient reads a C2SP tlog-tiles log end to end with the tile
// client of filippo.io/torchwood: it verifies the log's checkpoint with
// its verifier key, then reads every entry of the checkpoint's tree, each
// authenticated by the client against the tree (the full bundles as a
// stream, the entries of a partial bundle one by one with an inclusion
// proof), and prints each entry in base64, one a line, after a first line
// "<origin> <size>".
//
//	tileclient -url http://127.0.0.1:2582/tlog/ -vkey VKEY
//
// It exits non-zero on any error: a checkpoint that does not verify, a
// tile or entry that does not hash to the tree.
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"time"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func main() {
	url := flag.String("url", "", "the log's URL prefix (its checkpoint is <url>checkpoint)")
	vkey := flag.String("vkey", "", "the log's verifier key")
	flag.Parse()
	if err := run(*url, *vkey); err != nil {
		fmt.Fprintln(os.Stderr, "tileclient:", err)
		os.Exit(1)
	}
}

func run(url, vkey string) error {
	if url == "" || vkey == "" || flag.NArg() > 0 {
		return fmt.Errorf("want -url URL -vkey VKEY and no arguments")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("verifier key: %w", err)
	}
	f, err := torchwood.NewTileFetcher(url)
	if err != nil {
		return err
	}
	b, err := f.ReadEndpoint(ctx, "checkpoint")
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	n, err := note.Open(b, note.VerifierList(v))
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	cp, err := torchwood.ParseCheckpoint(n.Text)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if cp.Origin != v.Name() {
		return fmt.Errorf("checkpoint of %q, want %q", cp.Origin, v.Name())
	}
	c, err := torchwood.NewClient(f)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(w, "%s %d\n", cp.Origin, cp.N)
	next := int64(0)
	for i, e := range c.Entries(ctx, cp.Tree, 0) {
		if i != next {
			return fmt.Errorf("entry %d after %d", i, next-1)
		}
		fmt.Fprintln(w, base64.StdEncoding.EncodeToString(e))
		next++
	}
	if err := c.Err(); err != nil {
		return fmt.Errorf("entries: %w", err)
	}
	// The stream stops before a partial bundle: its entries one by one,
	// each with its inclusion proof checked against the tree.
	for ; next < cp.N; next++ {
		e, proof, err := c.Entry(ctx, cp.Tree, next)
		if err != nil {
			return fmt.Errorf("entry %d: %w", next, err)
		}
		if err := tlog.CheckRecord(proof, cp.N, cp.Hash, next, tlog.RecordHash(e)); err != nil {
			return fmt.Errorf("entry %d: %w", next, err)
		}
		fmt.Fprintln(w, base64.StdEncoding.EncodeToString(e))
	}
	return w.Flush()
}
