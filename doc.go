// Package plc holds the wire formats of a did:plc directory, each parsed
// in one place, so that every reader applies the same rules and limits:
// export lines, seq mode and legacy (ParseExportLine, ReadLineHead, with a
// legacy line's nullified flag kept as stated), seq-mode export pages
// (ParseSeqPage), /:did/log/audit entries (AuditEntry, ReadAuditLog),
// transparency-log leaves (AppendLeaf, ParseLeaf: exact inverses over
// canonical leaves), entry bundles (AppendBundleEntry, SplitBundle) and
// checkpoint bodies (CheckpointBody).
//
// Ops, their canonical encodings, the JSON renderings of entries and lines
// (validate.AppendAuditEntryJSON, validate.AppendSequencedJSON, held to
// this package's readers by its tests) and the one createdAt layout
// (validate.TimestampLayout) are the validator's. The package imports
// validate, the standard library and tlog's hash type only, and does no
// I/O. The directory's own formats are parsed strictly (unknown or
// duplicate fields, wrong types, non-canonical encodings are errors); an
// audit log is read leniently, as the reference's clients read it.
package plc
