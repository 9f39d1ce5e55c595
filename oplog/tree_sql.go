package oplog

import (
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

func checkpointRow(c Checkpoint, root, note []byte, ms int64) (Checkpoint, error) {
	if len(root) != tlog.HashSize {
		return c, fmt.Errorf("stored checkpoint root is %d bytes", len(root))
	}
	copy(c.Root[:], root)
	c.Note = note
	c.SignedAt = time.UnixMilli(ms).UTC()
	return c, nil
}
