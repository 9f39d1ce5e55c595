package plc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// AuditEntry is one element of a /:did/log/audit response: an op of the
// DID with its CID, whether it is nullified, and its createdAt, as the
// directory states them (validate.AppendAuditEntryJSON renders one).
type AuditEntry struct {
	DID       string          `json:"did"`
	Operation json.RawMessage `json:"operation"`
	CID       string          `json:"cid"`
	Nullified bool            `json:"nullified"`
	CreatedAt string          `json:"createdAt"`
	// Seq and Proof are present in GET /:did/log/audit?proof=true.
	Seq   int64       `json:"seq,omitempty"`
	Proof *AuditProof `json:"proof,omitempty"`
}

// AuditProof is an entry's inclusion proof in the transparency log: the
// leaf with index LeafIndex (Leaf) in the tree of size TreeSize, whose
// root the signed checkpoint note Checkpoint states.
type AuditProof struct {
	TreeSize   int64    `json:"treeSize"`
	LeafIndex  int64    `json:"leafIndex"`
	Hashes     []string `json:"hashes"`
	Checkpoint string   `json:"checkpoint"`
}

// ReadAuditLog decodes an audit log: one JSON array of entries and nothing
// after it. The envelope is decoded leniently (extra fields are ignored);
// the entries' ops and values are the caller's to judge.
func ReadAuditLog(r io.Reader) ([]AuditEntry, error) {
	var entries []AuditEntry
	dec := json.NewDecoder(r)
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("not an audit log (a JSON array of entries): %w", err)
	}
	if dec.More() {
		return nil, errors.New("not an audit log: data after the JSON array")
	}
	return entries, nil
}
