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
//     inverses of each other over canonical leaves).
//
// Ops themselves, their canonical encodings and the createdAt timestamp
// layout (validate.TimestampLayout, validate.AppendTimestamp and
// validate.ParseTimestamp) are the validator's: the package builds on
// validate and on the standard library only, and does no I/O. Parsers
// take bytes and are strict: unknown or duplicate fields, values of the
// wrong type and non-canonical encodings are errors, never ignored.
package plc
