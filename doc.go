// Package plc holds the wire formats of a did:plc directory, parsed and
// rendered in one place so that every reader of them applies the same
// rules and limits:
//
//   - an export line, seq mode or legacy (ParseExportLine, ReadLineHead,
//     ExportLine), with the nullified flag a legacy line states kept as
//     stated;
//   - an element of a /:did/log/audit response (AuditEntry), with its
//     transparency-log inclusion proof;
//   - a transparency-log leaf (Leaf: AppendLeaf and ParseLeaf, exact
//     inverses of each other over canonical leaves);
//   - the body of a signed checkpoint (CheckpointBody: origin, tree size,
//     root hash).
//
// Ops themselves, their canonical encodings, the JSON renderings of audit
// entries and export lines (validate.AppendAuditEntryJSON,
// validate.AppendSequencedJSON, which the tests hold to this package's
// readers) and the createdAt timestamp layout (validate.TimestampLayout,
// validate.AppendTimestamp, validate.ParseTimestamp) are the validator's.
// The package builds on validate, the standard library and the hash type
// of golang.org/x/mod/sumdb/tlog only, and does no I/O. Parsers take bytes
// and are strict where the format is the directory's own (export lines,
// leaves, checkpoints): unknown or duplicate fields, values of the wrong
// type and non-canonical encodings are errors, never ignored. An audit log
// is read leniently, as the reference's clients read it.
package plc
