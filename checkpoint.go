package plc

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// CheckpointBody is the body of a C2SP tlog-checkpoint: the log's origin,
// the tree size and the root hash. It is the text of the signed note the
// log publishes (the signatures are the note's, not the body's).
type CheckpointBody struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// Format renders the body: origin, size and base64 root hash, one per line.
func (c CheckpointBody) Format() string {
	return fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]))
}

// ParseCheckpointBody parses a checkpoint note's text (extension lines
// after the third are allowed and ignored): a non-empty origin, a size in
// its canonical decimal form, a base64 hash of tlog.HashSize bytes, each
// line ended by a newline.
func ParseCheckpointBody(text string) (CheckpointBody, error) {
	var c CheckpointBody
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 || !strings.HasSuffix(text, "\n") {
		return c, errors.New("checkpoint: want origin, size and root hash lines")
	}
	c.Origin = lines[0]
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return c, fmt.Errorf("checkpoint: bad tree size %q", lines[1])
	}
	c.Size = size
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return c, fmt.Errorf("checkpoint: bad root hash %q", lines[2])
	}
	copy(c.Root[:], root)
	if c.Origin == "" {
		return c, errors.New("checkpoint: empty origin")
	}
	return c, nil
}
