// Package audit holds the independent verifiers behind `plc audit`.
//
// VerifyLog replays a DID's audit log (the /:did/log/audit format) through
// the validate package and reports the first op the did:plc rules reject,
// or a disagreement between the log's recorded nullified flags and the ones
// recomputed from the ops themselves. It trusts nothing in the log but the
// acceptance times: every CID, the DID, every signature and every chain rule
// is recomputed.
package audit
