package oplog

import (
	"database/sql"
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

func scanChunks(rows opRows) ([]treeChunk, error) {
	var out []treeChunk
	for rows.Next() {
		var (
			first, last int64
			hashes      []byte
		)
		if err := rows.Scan(&first, &last, &hashes); err != nil {
			return nil, err
		}
		c, err := chunkBytes(first, last, hashes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// scanChunkAt reads the chunk holding seq from a row of (first_seq,
// last_seq, hashes) of the last chunk that starts at or before seq: found
// false when there is none or it ends before seq.
func scanChunkAt(row rowScanner, seq int64) (treeChunk, bool, error) {
	var (
		first, last int64
		hashes      []byte
	)
	err := row.Scan(&first, &last, &hashes)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && last < seq) {
		return treeChunk{}, false, nil
	}
	if err != nil {
		return treeChunk{}, false, err
	}
	c, err := chunkBytes(first, last, hashes)
	return c, err == nil, err
}

// scanCheckpoint reads a row of (size, root, note, signed_at): ErrNotFound
// when there is none.
func scanCheckpoint(row rowScanner) (Checkpoint, error) {
	var (
		c          Checkpoint
		root, note []byte
		ms         int64
	)
	err := row.Scan(&c.Size, &root, &note, &ms)
	if errors.Is(err, sql.ErrNoRows) {
		return c, ErrNotFound
	}
	if err != nil {
		return c, err
	}
	if len(root) != tlog.HashSize {
		return c, fmt.Errorf("stored checkpoint root is %d bytes", len(root))
	}
	copy(c.Root[:], root)
	c.Note = note
	c.SignedAt = time.UnixMilli(ms).UTC()
	return c, nil
}
