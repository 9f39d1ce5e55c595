package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/validate"
)

// Helpers of the HTTP conformance tests. Nothing here sleeps or reads the
// wall clock for anything a test checks: acceptance times come from a
// fakeClock.

// t0 is the time the fake clock starts at.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Keys.

// plcKey is a private key and its did:key; it is a validate.Signer.
type plcKey struct {
	priv atcrypto.PrivateKey
	did  string
}

func (k plcKey) HashAndSign(b []byte) ([]byte, error) { return k.priv.HashAndSign(b) }

var (
	keyPoolOnce sync.Once
	keyPool     []plcKey
	keyPoolErr  error
)

const keyPoolSize = 8

// keys returns n distinct keys, alternately K-256 and P-256, generated once
// per test binary.
func keys(t testing.TB, n int) []plcKey {
	t.Helper()
	keyPoolOnce.Do(func() {
		for i := range keyPoolSize {
			var priv atcrypto.PrivateKey
			if i%2 == 0 {
				priv, keyPoolErr = atcrypto.GeneratePrivateKeyK256()
			} else {
				priv, keyPoolErr = atcrypto.GeneratePrivateKeyP256()
			}
			if keyPoolErr != nil {
				return
			}
			pub, err := priv.PublicKey()
			if err != nil {
				keyPoolErr = err
				return
			}
			keyPool = append(keyPool, plcKey{priv: priv, did: pub.DIDKey()})
		}
	})
	if keyPoolErr != nil {
		t.Fatalf("generate keys: %v", keyPoolErr)
	}
	if n > keyPoolSize {
		t.Fatalf("keys: at most %d", keyPoolSize)
	}
	return keyPool[:n]
}

func didKeys(ks ...plcKey) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.did
	}
	return out
}

// Operations.

// atprotoKey is a fixed K-256 did:key (from atproto-interop-tests) used as
// the atproto verification method.
const atprotoKey = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"

// opBody is a plc_operation body (no prev, no sig) with one handle, the
// given rotation keys, an atproto verification method and a PDS.
func opBody(handle string, rotation ...plcKey) validate.Operation {
	return validate.Operation{
		Type:                validate.TypeOperation,
		RotationKeys:        didKeys(rotation...),
		VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: atprotoKey}},
		AlsoKnownAs:         []string{"at://" + handle},
		Services: []validate.Service{{
			ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.example.com",
		}},
	}
}

func signOp(t testing.TB, o validate.Operation, k plcKey) *validate.Op {
	t.Helper()
	op, err := validate.Sign(o, k)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return op
}

// genesisOp returns a genesis op with the given rotation keys, signed by
// signer.
func genesisOp(t testing.TB, handle string, signer plcKey, rotation ...plcKey) *validate.Op {
	t.Helper()
	return signOp(t, opBody(handle, rotation...), signer)
}

// updateOp returns an op after prev with a new handle and the given
// rotation keys, signed by signer.
func updateOp(t testing.TB, prev *validate.Op, handle string, signer plcKey, rotation ...plcKey) *validate.Op {
	t.Helper()
	o := opBody(handle, rotation...)
	o.Prev = prev.CID()
	return signOp(t, o, signer)
}

func tombstoneOp(t testing.TB, prev *validate.Op, signer plcKey) *validate.Op {
	t.Helper()
	return signOp(t, validate.Operation{Type: validate.TypeTombstone, Prev: prev.CID()}, signer)
}

// Expected renderings, built from validate's renderers independently of
// render.go.

func opJSON(op *validate.Op) string { return string(op.AppendJSON(nil)) }

func stamp(t time.Time) string { return string(validate.AppendTimestamp(nil, t)) }

func auditJSON(did string, op *validate.Op, createdAt time.Time, nullified bool) string {
	return fmt.Sprintf(`{"did":%q,"operation":%s,"cid":%q,"nullified":%t,"createdAt":%q}`,
		did, opJSON(op), op.CID(), nullified, stamp(createdAt))
}

func sequencedJSON(did string, op *validate.Op, createdAt time.Time, seq int64) string {
	return fmt.Sprintf(`{"type":"sequenced_op","did":%q,"operation":%s,"cid":%q,"createdAt":%q,"seq":%d}`,
		did, opJSON(op), op.CID(), stamp(createdAt), seq)
}

func messageJSON(msg string) string {
	return `{"message":` + string(validate.AppendJSONString(nil, msg)) + `}`
}

// Backends.

// backend opens a fresh, migrated store.
type backend struct {
	name string
	open func(t *testing.T) oplog.Store
}

// backends are the stores the HTTP conformance suite runs against.
var backends = []backend{
	{"sqlite", openSQLiteStore},
	{"postgres", openPostgresStore},
}

// forEachBackend runs f as a subtest per backend.
func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

func openSQLiteStore(t *testing.T) oplog.Store {
	t.Helper()
	s, _ := storetest.SQLite(t)
	return s
}

// openPostgresStore skips the test when no PostgreSQL cluster is
// configured (see internal/pgtest).
func openPostgresStore(t *testing.T) oplog.Store {
	t.Helper()
	url := pgtest.URL(t)
	if _, err := oplog.MigrateUp(url); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return openPG(t, url)
}

// openPG opens the migrated PostgreSQL database url, closed when the test
// ends.
func openPG(t *testing.T, url string) oplog.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := oplog.OpenPostgres(ctx, url)
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The test environment.

// apiEnv is a log over a fresh store, a Server over the log, and an HTTP
// server in front of it.
type apiEnv struct {
	t     *testing.T
	clock *testclock.Clock
	store oplog.Store // the store as opened (unwrapped)
	log   *oplog.Log
	srv   *Server
	http  *httptest.Server
	reg   *prometheus.Registry
	logs  *storetest.Buffer
}

type envOptions struct {
	// wrap, if set, wraps the store the log uses.
	wrap func(oplog.Store) oplog.Store
	// noRateLimit turns the per-DID rate limit off.
	noRateLimit bool
	// config, if set, edits the server's Config before New.
	config func(*Config)
}

func newAPIEnv(t *testing.T, b backend, o envOptions) *apiEnv {
	t.Helper()
	env := &apiEnv{
		t:     t,
		clock: testclock.New(t0),
		store: b.open(t),
		reg:   prometheus.NewRegistry(),
		logs:  &storetest.Buffer{},
	}
	store := env.store
	if o.wrap != nil {
		store = o.wrap(store)
	}
	env.log = oplog.NewLog(store, oplog.Options{Now: env.clock.Now, NoRateLimit: o.noRateLimit})
	t.Cleanup(env.log.Close)
	cfg := Config{
		Log:      env.log,
		Logger:   slog.New(slog.NewTextHandler(env.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry: env.reg,
		Version:  "test-version",
		Now:      env.clock.Now,
	}
	if o.config != nil {
		o.config(&cfg)
	}
	env.srv = New(cfg)
	env.http = httptest.NewServer(env.srv)
	t.Cleanup(env.http.Close)
	return env
}

// reply is a response, read whole.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request with the given raw (possibly percent-encoded) path
// and query, and header pairs. Every response is checked for the CORS
// header and, where the spec documents the route, against openapi.yaml.
func (e *apiEnv) do(method, path string, body []byte, header ...string) reply {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	if err != nil {
		e.t.Fatalf("new request %s %s: %v", method, path, err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, body: b}
	if got := r.header.Get("Access-Control-Allow-Origin"); got != "*" {
		e.t.Errorf("%s %s: Access-Control-Allow-Origin = %q, want *", method, path, got)
	}
	checkAgainstSpec(e.t, req, r)
	return r
}

func (e *apiEnv) get(path string) reply {
	e.t.Helper()
	return e.do(http.MethodGet, path, nil)
}

// submit POSTs op as JSON to /did.
func (e *apiEnv) submit(did string, op *validate.Op) reply {
	e.t.Helper()
	return e.do(http.MethodPost, "/"+did, op.AppendJSON(nil), "Content-Type", "application/json")
}

// mustSubmit submits op and fails the test unless it is accepted.
func (e *apiEnv) mustSubmit(did string, op *validate.Op) {
	e.t.Helper()
	r := e.submit(did, op)
	r.expect(e.t, http.StatusOK, "text/plain; charset=utf-8", "OK")
}

// expect checks a reply's status, content type and exact body.
func (r reply) expect(t testing.TB, status int, contentType, body string) {
	t.Helper()
	if r.status != status {
		t.Errorf("status %d, want %d (body %.300s)", r.status, status, r.body)
	}
	if got := r.header.Get("Content-Type"); got != contentType {
		t.Errorf("content-type %q, want %q", got, contentType)
	}
	if string(r.body) != body {
		t.Errorf("body:\n got  %.2000s\n want %.2000s", r.body, body)
	}
}

// expectMessage checks an error reply: status and {"message": msg}.
func (r reply) expectMessage(t testing.TB, status int, msg string) {
	t.Helper()
	r.expect(t, status, "application/json; charset=utf-8", messageJSON(msg))
}

// The OpenAPI document, as a test oracle.

var (
	specOnce sync.Once
	specDoc  *openapi3.T
	specErr  error
)

// loadSpec parses and validates openapi.yaml once per test binary.
func loadSpec(t testing.TB) *openapi3.T {
	t.Helper()
	specOnce.Do(func() {
		openapi3filter.RegisterBodyDecoder("application/did+ld+json", openapi3filter.JSONBodyDecoder)
		openapi3filter.RegisterBodyDecoder(contentJSONL, openapi3filter.PlainBodyDecoder)
		loader := openapi3.NewLoader()
		specDoc, specErr = loader.LoadFromData(openapiYAML)
		if specErr == nil {
			specErr = specDoc.Validate(context.Background())
		}
	})
	if specErr != nil {
		t.Fatalf("openapi.yaml: %v", specErr)
	}
	return specDoc
}

// specPath returns the spec's path template for an escaped request path,
// or "" if the API has no route for it.
func specPath(escaped string) string {
	if len(escaped) > 1 {
		escaped = strings.TrimSuffix(escaped, "/")
	}
	switch escaped {
	case "/_health", "/openapi.yaml", "/export", "/export/stream", "/dids":
		return escaped
	case "/_watch", "/_watch/key":
		return escaped
	case "/", "/ui":
		return "" // the web UI's, when Config.UI is set: not in the API contract
	}
	if strings.HasPrefix(escaped, "/ui/") {
		return ""
	}
	if h, ok := strings.CutPrefix(escaped, "/_lookup/handle/"); ok && h != "" && !strings.Contains(h, "/") {
		return "/_lookup/handle/{handle}"
	}
	segs := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	if segs[0] == "" {
		return ""
	}
	switch {
	case len(segs) == 1:
		return "/{did}"
	case len(segs) == 2 && (segs[1] == "data" || segs[1] == "log"):
		return "/{did}/" + segs[1]
	case len(segs) == 3 && segs[1] == "log" && (segs[2] == "audit" || segs[2] == "last"):
		return "/{did}/log/" + segs[2]
	}
	return ""
}

// checkAgainstSpec validates a response against the spec's operation for
// the request, if the spec documents one; a status the spec does not list
// is an error. Export lines are validated one by one against the schemas
// named by x-line-schema.
func checkAgainstSpec(t testing.TB, req *http.Request, r reply) {
	t.Helper()
	doc := loadSpec(t)
	p := specPath(req.URL.EscapedPath())
	if p == "" || req.Method == http.MethodOptions || req.Method == http.MethodHead {
		return
	}
	item := doc.Paths.Value(p)
	if item == nil {
		t.Errorf("%s %s: spec has no path %s", req.Method, req.URL, p)
		return
	}
	op := item.GetOperation(req.Method)
	if op == nil {
		if r.status != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: status %d, want 405 for a method the spec does not list", req.Method, req.URL, r.status)
		}
		return
	}
	params := map[string]string{}
	if strings.HasPrefix(p, "/{did}") {
		params["did"] = strings.Split(strings.TrimPrefix(req.URL.EscapedPath(), "/"), "/")[0]
	}
	if p == "/_lookup/handle/{handle}" {
		params["handle"] = strings.TrimPrefix(req.URL.EscapedPath(), "/_lookup/handle/")
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request:    req,
			PathParams: params,
			Route:      &routers.Route{Spec: doc, Path: p, PathItem: item, Method: req.Method, Operation: op},
		},
		Status:  r.status,
		Header:  r.header,
		Body:    io.NopCloser(bytes.NewReader(r.body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s %s: response does not match openapi.yaml: %v\nbody: %.500s", req.Method, req.URL, err, r.body)
		return
	}
	if !strings.HasPrefix(r.header.Get("Content-Type"), contentJSONL) || len(r.body) == 0 {
		return
	}
	media := op.Responses.Status(r.status).Value.Content.Get(contentJSONL)
	lineSchemas := refsIn(media.Schema.Value.Extensions["x-line-schema"])
	if len(lineSchemas) == 0 {
		t.Errorf("%s: no x-line-schema for %s", p, contentJSONL)
		return
	}
	body := r.body
	if p == "/dids" {
		// Its lines are each ended by "\n"; /export's are joined by it.
		if !bytes.HasSuffix(body, []byte("\n")) {
			t.Errorf("%s %s: the last line is not ended by a newline", req.Method, req.URL)
		}
		body = bytes.TrimSuffix(body, []byte("\n"))
	}
	for i, line := range bytes.Split(body, []byte("\n")) {
		var v any
		if err := json.Unmarshal(line, &v); err != nil {
			t.Errorf("%s %s: line %d is not JSON: %v", req.Method, req.URL, i+1, err)
			continue
		}
		matched := 0
		for _, name := range lineSchemas {
			if doc.Components.Schemas[name].Value.VisitJSON(v) == nil {
				matched++
			}
		}
		if matched != 1 {
			t.Errorf("%s %s: line %d matches %d of the line schemas %v, want 1: %s", req.Method, req.URL, i+1, matched, lineSchemas, line)
		}
	}
}

// refsIn returns the component schema names of the $refs in an extension
// value.
func refsIn(v any) []string {
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "$ref" {
					out = append(out, strings.TrimPrefix(s, "#/components/schemas/"))
				} else {
					walk(x)
				}
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	return out
}
