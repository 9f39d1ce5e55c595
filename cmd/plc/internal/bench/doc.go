// Package bench is `plc bench`: the scenarios an operator sizing hardware
// runs against the directory. write, resolve and export drive a running
// directory over HTTP; verify and import replay a corpus through the
// validator and through plc import's pipeline beside the signature-check
// bound measured in the same run; gen writes the signed synthetic corpus
// they read. It is kept out of the production commands' package, and
// reaches the directory only through its HTTP API and the oplog and audit
// packages' exported entry points; Run is its only entry.
package bench
