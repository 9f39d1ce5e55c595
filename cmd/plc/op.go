package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/cmd/plc/internal/opbuild"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/validate"
)

// maxOpInput bounds what plc op sign and submit read: a directory's
// request body limit.
const maxOpInput = 100 << 10

func runOp(ctx context.Context, e env, args []string) int {
	return cli.RunGroup(ctx, e, "op", "command", []command{
		{Name: "genesis", Summary: "make a new DID: build and sign its genesis op from key files", Run: runOpGenesis},
		{Name: "update", Summary: "change a DID's handle, PDS, signing key or rotation keys", Run: runOpUpdate},
		{Name: "recover", Summary: "nullify ops signed by a lower-priority rotation key (72-hour window)", Run: runOpRecover},
		{Name: "sign", Summary: "sign an op built elsewhere", Run: runOpSign},
		{Name: "submit", Summary: "check a signed op against the DID's log and send it to a directory", Run: runOpSubmit},
	}, args)
}

const opKeyHelp = `Private keys are read from files only (the multibase form plc keygen
--type k256|p256 and goat crypto generate write; mode 0600): a key given on
the command line is refused.`

const opSubmitHelp = `With --directory the op is submitted there (POST /:did) once it passed
every check; with --dry-run, or without --directory for genesis, nothing
is sent. Either way the op is printed first, on standard output, as JSON:
{"did", "cid", "operation", "document", "nullifies"}, which plc op submit
reads back.`

// keyFile loads the private key in path, refusing a key given in place
// of a file name.
func keyFile(flagName, path string) (*opbuild.Key, error) {
	if path == "" {
		return nil, fmt.Errorf("--%s FILE is required", flagName)
	}
	if opbuild.LooksLikeKey(path) {
		return nil, fmt.Errorf("--%s takes the name of a key file, not a key: a key on the command line lands in shell history and the process list; write it to a file (mode 0600)", flagName)
	}
	return opbuild.LoadKeyFile(path)
}

// publicKey is a did:key given as such, or the public key of a key file.
func publicKey(flagName, v string) (string, error) {
	if strings.HasPrefix(v, "did:key:") {
		return v, nil
	}
	k, err := keyFile(flagName, v)
	if err != nil {
		return "", err
	}
	return k.DIDKey, nil
}

// keyList is a repeatable flag of key files or did:keys.
type keyList struct {
	name string
	keys *[]string
	// files keeps the keys loaded from files, by did:key.
	files       map[string]*opbuild.Key
	didKeysOnly bool
}

func (l *keyList) String() string { return "" }

func (l *keyList) Set(v string) error {
	if l.didKeysOnly && !strings.HasPrefix(v, "did:key:") {
		return fmt.Errorf("want a did:key:z… public key")
	}
	if strings.HasPrefix(v, "did:key:") {
		*l.keys = append(*l.keys, v)
		return nil
	}
	k, err := keyFile(l.name, v)
	if err != nil {
		return err
	}
	if l.files != nil {
		l.files[k.DIDKey] = k
	}
	*l.keys = append(*l.keys, k.DIDKey)
	return nil
}

// changeFlags binds the flags of what an update or recovery changes.
func changeFlags(fs *flag.FlagSet, ch *opbuild.Changes) {
	fs.StringVar(&ch.Handle, "handle", "", "new handle (becomes at://HANDLE in alsoKnownAs)")
	fs.StringVar(&ch.PDS, "pds", "", "new PDS endpoint URL (the atproto_pds service)")
	fs.Func("signing-key", "new atproto signing key: a did:key, or a key FILE whose public key is used", func(v string) error {
		k, err := publicKey("signing-key", v)
		ch.SigningKey = k
		return err
	})
	fs.Var(&keyList{name: "add-rotation-key", keys: &ch.AddRotationKeys}, "add-rotation-key", "rotation key to add, after the others (a did:key or a key FILE; repeatable)")
	fs.Var(&keyList{name: "remove-rotation-key", keys: &ch.RemoveRotationKeys}, "remove-rotation-key", "rotation key to remove (a did:key or a key FILE; repeatable)")
}

func directoryFlag(f *cli.Flags, p *string) {
	f.Str(p, "directory", "PLC_DIRECTORY", "", "the directory's URL (e.g. http://localhost:2582 or https://plc.directory)")
}

func runOpGenesis(ctx context.Context, e env, args []string) int {
	const usage = "plc op genesis --rotation-key FILE|did:key... [--sign-with FILE] [--signing-key FILE|did:key] [--handle H] [--pds URL] [--directory URL] [--dry-run]"
	fs := cli.NewFlagSet("op genesis", usage, `Builds the genesis op of a new DID, signs it with a rotation key and
prints it, with the DID and its document. Rotation keys are listed
highest priority first, in the order given: --rotation-key takes key
files, --rotation-did-key public did:keys (for keys held elsewhere); the
op is signed with --sign-with, by default the first rotation key given as
a file.

`+opSubmitHelp+`

`+opKeyHelp, e)
	var (
		g         opbuild.Genesis
		signWith  string
		directory string
		dryRun    bool
		files     = map[string]*opbuild.Key{}
	)
	fs.Var(&keyList{name: "rotation-key", keys: &g.RotationKeys, files: files}, "rotation-key", "rotation key FILE (repeatable; highest priority first)")
	fs.Var(&keyList{name: "rotation-did-key", keys: &g.RotationKeys, didKeysOnly: true}, "rotation-did-key", "rotation key as a public did:key (repeatable; same order as --rotation-key)")
	fs.StringVar(&signWith, "sign-with", "", "rotation key FILE to sign with (default: the first --rotation-key)")
	fs.Func("signing-key", "atproto signing key: a did:key, or a key FILE whose public key is used", func(v string) error {
		k, err := publicKey("signing-key", v)
		g.SigningKey = k
		return err
	})
	fs.StringVar(&g.Handle, "handle", "", "handle (at://HANDLE in alsoKnownAs)")
	fs.StringVar(&g.PDS, "pds", "", "PDS endpoint URL (the atproto_pds service)")
	f := cli.NewFlags(fs, e)
	directoryFlag(f, &directory)
	fs.BoolVar(&dryRun, "dry-run", false, "print the op and send nothing")
	if code, done := f.Parse("plc op genesis", args); done {
		return code
	}
	if fs.NArg() > 0 || len(g.RotationKeys) == 0 {
		return e.Failf(exitUsage, "plc op genesis: want at least one --rotation-key and no arguments\nUsage: %s", usage)
	}
	var signer *opbuild.Key
	if signWith != "" {
		k, err := keyFile("sign-with", signWith)
		if err != nil {
			return e.Failf(exitUsage, "plc op genesis: %v", err)
		}
		signer = k
	} else {
		for _, dk := range g.RotationKeys {
			if k := files[dk]; k != nil {
				signer = k
				break
			}
		}
		if signer == nil {
			return e.Failf(exitUsage, "plc op genesis: no rotation key given as a file to sign with: add --sign-with FILE")
		}
	}
	res, err := opbuild.BuildGenesis(g, signer, time.Now())
	if err != nil {
		return e.Failf(exitFailure, "plc op genesis: %v", err)
	}
	return finishOp(ctx, e, "plc op genesis", res, directory, dryRun || directory == "")
}

// directoryClient is the client of --directory, which the command needs.
func directoryClient(directory string) (*client.Client, error) {
	if directory == "" {
		return nil, fmt.Errorf("--directory URL is required")
	}
	c, err := client.New(directory, nil)
	if err != nil {
		return nil, fmt.Errorf("--directory: %v", err)
	}
	return c, nil
}

// history fetches and replays did's audit log; a DID not registered has
// an empty history.
func history(ctx context.Context, c *client.Client, did string) (*opbuild.History, error) {
	if !validate.ValidDID(did) {
		return nil, fmt.Errorf("--did %q is not a did:plc identifier (did:plc: and 24 characters of base32)", did)
	}
	entries, _, err := c.AuditLog(ctx, did)
	if errors.Is(err, client.ErrNotRegistered) {
		return opbuild.Replay(did, nil)
	}
	if err != nil {
		return nil, err
	}
	return opbuild.Replay(did, entries)
}

// opCommon are the flags update and recover share.
type opCommon struct {
	did, directory, key string
	dryRun              bool
	ch                  opbuild.Changes
}

func (o *opCommon) bind(fs *flag.FlagSet, f *cli.Flags) {
	fs.StringVar(&o.did, "did", "", "the DID (required)")
	directoryFlag(f, &o.directory)
	fs.StringVar(&o.key, "key", "", "rotation key FILE to sign with (required)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the op and the resulting document, send nothing")
	changeFlags(fs, &o.ch)
}

func runOpUpdate(ctx context.Context, e env, args []string) int {
	const usage = "plc op update --did D --directory URL --key FILE [--handle H] [--pds URL] [--signing-key FILE|did:key] [--add-rotation-key K...] [--remove-rotation-key K...] [--dry-run]"
	fs := cli.NewFlagSet("op update", usage, `Fetches the DID's audit log from the directory, replays and checks it,
builds the next op on its current head with the changes asked for, signs
it with --key (one of the head's rotation keys) and checks it with the
directory's rules at this machine's time.

`+opSubmitHelp+`

`+opKeyHelp, e)
	var o opCommon
	f := cli.NewFlags(fs, e)
	o.bind(fs, f)
	if code, done := f.Parse("plc op update", args); done {
		return code
	}
	if fs.NArg() > 0 || o.did == "" {
		return e.Failf(exitUsage, "plc op update: want --did, --directory, --key and no arguments\nUsage: %s", usage)
	}
	if o.ch.Empty() {
		return e.Failf(exitUsage, "plc op update: nothing to change: give --handle, --pds, --signing-key, --add-rotation-key or --remove-rotation-key")
	}
	return o.run(ctx, e, "plc op update", func(h *opbuild.History, key *opbuild.Key, now time.Time) (*opbuild.Result, error) {
		return h.Update(o.ch, key, now)
	})
}

func runOpRecover(ctx context.Context, e env, args []string) int {
	const usage = "plc op recover --did D --directory URL --key FILE [--nullify-from CID] [changes as for update] [--dry-run]"
	fs := cli.NewFlagSet("op recover", usage, `Fetches the DID's audit log and finds the ops --key may nullify: walking
back from the head, the ops signed by keys of lower priority than --key
(listed after it in their prev's rotation keys, or by keys of ops that no
longer list it); a key of higher priority may undo what a lower one did
within 72 hours of it. Builds the op that forks from the op before them,
restoring that op's state with the changes asked for (for instance
--remove-rotation-key of a stolen key); of those ops, only the ones
accepted within the last 72 hours can be nullified. The owner's own
updates signed by the stolen key are among them: --nullify-from CID
starts at a chosen op instead, keeping the ones before it. Signs the op
and checks it with the directory's rules at this machine's time: outside
the 72-hour window it is refused, saying when the window closed.

`+opSubmitHelp+`

`+opKeyHelp, e)
	var o opCommon
	f := cli.NewFlags(fs, e)
	o.bind(fs, f)
	from := fs.String("nullify-from", "", "CID of the first op to nullify (default: every op back to the latest not signed by a key of lower priority than --key, within the window)")
	if code, done := f.Parse("plc op recover", args); done {
		return code
	}
	if fs.NArg() > 0 || o.did == "" {
		return e.Failf(exitUsage, "plc op recover: want --did, --directory, --key and no arguments\nUsage: %s", usage)
	}
	return o.run(ctx, e, "plc op recover", func(h *opbuild.History, key *opbuild.Key, now time.Time) (*opbuild.Result, error) {
		return h.Recover(o.ch, key, *from, now)
	})
}

func (o *opCommon) run(ctx context.Context, e env, cmd string, build func(*opbuild.History, *opbuild.Key, time.Time) (*opbuild.Result, error)) int {
	key, err := keyFile("key", o.key)
	if err != nil {
		return e.Failf(exitUsage, "%s: %v", cmd, err)
	}
	c, err := directoryClient(o.directory)
	if err != nil {
		return e.Failf(exitUsage, "%s: %v", cmd, err)
	}
	h, err := history(ctx, c, o.did)
	if err != nil {
		return e.Failf(exitFailure, "%s: %v", cmd, err)
	}
	res, err := build(h, key, time.Now())
	if err != nil {
		return e.Failf(exitFailure, "%s: %v", cmd, err)
	}
	return finishOp(ctx, e, cmd, res, o.directory, o.dryRun)
}

// printedOp is what the op commands print and plc op submit reads back.
type printedOp struct {
	DID       string          `json:"did"`
	CID       string          `json:"cid"`
	Operation json.RawMessage `json:"operation"`
	Document  json.RawMessage `json:"document"`
	Nullifies []string        `json:"nullifies,omitempty"`
}

// finishOp prints res and, unless dryRun, submits it to directory.
func finishOp(ctx context.Context, e env, cmd string, res *opbuild.Result, directory string, dryRun bool) int {
	out := printedOp{DID: res.DID, CID: res.Op.CID(), Operation: res.Op.AppendJSON(nil), Document: res.Document, Nullifies: res.Nullifies}
	if out.Document == nil {
		out.Document = json.RawMessage("null")
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return e.Failf(exitFailure, "%s: %v", cmd, err)
	}
	fmt.Fprintf(e.Stdout, "%s\n", b)
	for _, n := range res.Nullifies {
		fmt.Fprintf(e.Stderr, "nullifies %s\n", n)
	}
	if dryRun {
		fmt.Fprintf(e.Stderr, "dry run: %s %s checked, not sent\n", res.DID, res.Op.CID())
		return exitOK
	}
	c, err := directoryClient(directory)
	if err != nil {
		return e.Failf(exitUsage, "%s: %v", cmd, err)
	}
	if _, _, err := c.Post(ctx, "/"+res.DID, "application/json", res.Op.AppendJSON(nil), client.MaxDocumentBytes); err != nil {
		return e.Failf(exitFailure, "%s: not accepted: %v", cmd, err)
	}
	fmt.Fprintf(e.Stderr, "submitted %s %s to %s\n", res.DID, res.Op.CID(), c)
	return exitOK
}

// readOpInput reads an op (or what the op commands print) from the file
// named by args, or standard input for none or "-".
func readOpInput(e env, args []string) ([]byte, error) {
	var r io.Reader = e.Stdin
	switch {
	case len(args) > 1:
		return nil, fmt.Errorf("want one FILE or -")
	case len(args) == 1 && args[0] != "-":
		f, err := os.Open(args[0])
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxOpInput+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxOpInput {
		return nil, fmt.Errorf("input over %d bytes: not an op", maxOpInput)
	}
	return bytes.TrimSpace(b), nil
}

// parseOpInput parses an op, or what the op commands print (the op and
// its DID). A bare op that is not a genesis op has no DID.
func parseOpInput(b []byte) (*validate.Op, string, error) {
	var printed printedOp
	if json.Unmarshal(b, &printed) == nil && len(printed.Operation) > 0 {
		op, err := validate.ParseJSON(printed.Operation)
		if err != nil {
			return nil, "", fmt.Errorf("its operation: %w", err)
		}
		return op, printed.DID, nil
	}
	op, err := validate.ParseJSON(b)
	if err != nil {
		return nil, "", err
	}
	if op.Prev() == "" {
		return op, op.GenesisDID(), nil
	}
	return op, "", nil
}

// unsignedPlaceholder stands in for the sig of an unsigned op, so that
// the validator's strict parser reads it; Sign replaces it.
var unsignedPlaceholder = strings.Repeat("A", 86)

func runOpSign(ctx context.Context, e env, args []string) int {
	const usage = "plc op sign --key FILE [FILE|-]"
	fs := cli.NewFlagSet("op sign", usage, `Signs an op built elsewhere: reads the op as JSON (without "sig", or
with one, which is replaced) from FILE or standard input, signs it with
--key and prints the signed op. Only its form is checked here; plc op
submit checks it against the DID's log.

`+opKeyHelp, e)
	keyPath := fs.String("key", "", "rotation key FILE to sign with (required)")
	pos, code, done := cli.ParseInterspersed(fs, args)
	if done {
		return code
	}
	key, err := keyFile("key", *keyPath)
	if err != nil {
		return e.Failf(exitUsage, "plc op sign: %v\nUsage: %s", err, usage)
	}
	b, err := readOpInput(e, pos)
	if err != nil {
		return e.Failf(exitUsage, "plc op sign: %v", err)
	}
	op, err := validate.ParseJSON(b)
	if err != nil && strings.Contains(err.Error(), `missing field "sig"`) && bytes.HasPrefix(b, []byte("{")) {
		withSig := append([]byte(`{"sig":"`+unsignedPlaceholder+`",`), b[1:]...)
		op, err = validate.ParseJSON(withSig)
	}
	if err != nil {
		return e.Failf(exitFailure, "plc op sign: not an op: %v", err)
	}
	signed, err := validate.Sign(op.Operation(), key)
	if err != nil {
		return e.Failf(exitFailure, "plc op sign: %v", err)
	}
	fmt.Fprintf(e.Stdout, "%s\n", signed.AppendJSON(nil))
	return exitOK
}

func runOpSubmit(ctx context.Context, e env, args []string) int {
	const usage = "plc op submit --directory URL [--did D] [FILE|-]"
	fs := cli.NewFlagSet("op submit", usage, `Reads a signed op (bare, or as the op commands print it) from FILE or
standard input, fetches the DID's audit log from the directory, checks the
op against it with the directory's rules at this machine's time, and
submits it. --did is needed for an op that is not a genesis op, unless
the input names it.`, e)
	var did, directory string
	fs.StringVar(&did, "did", "", "the DID the op is for (default: the input's, or the genesis op's)")
	f := cli.NewFlags(fs, e)
	directoryFlag(f, &directory)
	pos, code, done := cli.ParseInterspersed(fs, args)
	if done {
		return code
	}
	if f.Err != nil {
		return e.Failf(exitUsage, "plc op submit: %v", f.Err)
	}
	c, err := directoryClient(directory)
	if err != nil {
		return e.Failf(exitUsage, "plc op submit: %v\nUsage: %s", err, usage)
	}
	b, err := readOpInput(e, pos)
	if err != nil {
		return e.Failf(exitUsage, "plc op submit: %v", err)
	}
	op, stated, err := parseOpInput(b)
	if err != nil {
		return e.Failf(exitFailure, "plc op submit: not an op: %v", err)
	}
	switch {
	case did == "" && stated == "":
		return e.Failf(exitUsage, "plc op submit: the op is not a genesis op: give --did")
	case did == "":
		did = stated
	case stated != "" && stated != did:
		return e.Failf(exitUsage, "plc op submit: --did %s, but the input is for %s", did, stated)
	}
	h, err := history(ctx, c, did)
	if err != nil {
		return e.Failf(exitFailure, "plc op submit: %v", err)
	}
	res, err := h.Check(op, time.Now())
	if err != nil {
		return e.Failf(exitFailure, "plc op submit: %v", err)
	}
	if _, _, err := c.Post(ctx, "/"+did, "application/json", op.AppendJSON(nil), client.MaxDocumentBytes, http.StatusOK); err != nil {
		return e.Failf(exitFailure, "plc op submit: not accepted: %v", err)
	}
	fmt.Fprintf(e.Stderr, "submitted %s %s to %s\n", did, res.Op.CID(), c)
	return exitOK
}
