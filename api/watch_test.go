package api

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
	"github.com/plcdir/plc/watch"
)

// watchEnv is an apiEnv serving GET /_watch and /_watch/key, with the
// streams' keep-alive tickers and lifetimes in the test's hands.
type watchEnv struct {
	*apiEnv
	hub       *watch.Hub
	watcher   *Watcher
	key       ed25519.PrivateKey
	tickers   chan chan time.Time // each new stream's keep-alive ticker
	lifetimes chan chan time.Time // each new stream's lifetime
}

func newWatchEnv(t *testing.T, b backend, opts WatchOptions) *watchEnv {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e := &watchEnv{key: key, tickers: make(chan chan time.Time, 100), lifetimes: make(chan chan time.Time, 100)}
	opts.NewTicker = func(time.Duration) (<-chan time.Time, func()) {
		c := make(chan time.Time)
		e.tickers <- c
		return c, func() {}
	}
	opts.After = func(time.Duration) <-chan time.Time {
		c := make(chan time.Time)
		e.lifetimes <- c
		return c
	}
	e.apiEnv = newAPIEnv(t, b, envOptions{noRateLimit: true, config: func(c *Config) {
		e.hub = watch.NewHub(c.Log, watch.HubOptions{PollInterval: time.Hour})
		e.watcher = NewWatcher(e.hub, opts)
		c.Watch = e.watcher
		c.WatchKey = key.Public().(ed25519.PublicKey)
	}})
	// Before the HTTP server's Close, which waits for the streams.
	t.Cleanup(func() {
		e.watcher.Close()
		e.hub.Close()
	})
	return e
}

// submitAt moves the clock by d and submits op.
func (e *watchEnv) submitAt(d time.Duration, did string, op *validate.Op) {
	e.t.Helper()
	e.clock.Advance(d)
	e.mustSubmit(did, op)
}

// sseEvent is one server-sent event, or a comment.
type sseEvent struct {
	id, event, data, comment string
}

// sseStream is an open GET /_watch.
type sseStream struct {
	t    *testing.T
	resp *http.Response
	rd   *bufio.Reader
}

func (e *watchEnv) openWatch(query string, header ...string) *sseStream {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.http.URL+"/_watch?"+query, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("GET /_watch?%s: %d %s: %s", query, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := &sseStream{t: e.t, resp: resp, rd: bufio.NewReader(resp.Body)}
	if c := s.next(); c.comment != "watching" {
		e.t.Fatalf("first line %+v, want the comment watching", c)
	}
	return s
}

// next reads the next event or comment; io.EOF ends the test.
func (s *sseStream) next() sseEvent {
	s.t.Helper()
	var ev sseEvent
	for {
		line, err := s.rd.ReadString('\n')
		if err != nil {
			s.t.Fatalf("reading the stream: %v (so far %+v)", err, ev)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			return ev
		case strings.HasPrefix(line, ": "):
			ev.comment = line[2:]
		default:
			k, v, _ := strings.Cut(line, ": ")
			switch k {
			case "id":
				ev.id = v
			case "event":
				ev.event = v
			case "data":
				ev.data = v
			default:
				s.t.Fatalf("unexpected line %q", line)
			}
		}
	}
}

// change reads the next event, an op, and decodes it.
func (s *sseStream) change() watch.Change {
	s.t.Helper()
	ev := s.next()
	var c watch.Change
	if ev.event != "op" || json.Unmarshal([]byte(ev.data), &c) != nil || ev.id != itoa(c.Seq) {
		s.t.Fatalf("event %+v: want an op whose id is its seq", ev)
	}
	return c
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// hostileRotation is a DID with two rotation keys, whose lower-priority
// key rotates every key to an attacker's and moves the PDS, and the
// higher-priority key's recovery of it, made within 72 hours.
type hostileRotation struct {
	id       *optest.Identity
	attacker optest.Key
	rotation *validate.Op
	recovery *validate.Op
}

func newHostileRotation(t *testing.T) *hostileRotation {
	h := &hostileRotation{id: optest.NewIdentity(t, "alice.test", 2), attacker: optest.NewKey(t, false)}
	body := h.id.Body
	body.Prev = h.id.Head.CID()
	body.RotationKeys = []string{h.attacker.DID}
	body.Services = []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://evil.example.com"}}
	h.rotation = optest.Sign(t, body, h.id.Rotation[1])
	rec := h.id.Body
	rec.Prev = h.id.Head.CID()
	h.recovery = optest.Sign(t, rec, h.id.Rotation[0])
	return h
}

// check checks the events of the rotation (seq 2) and of the recovery
// (seq 3).
func (h *hostileRotation) check(t *testing.T, what string, rot, rec watch.Change) {
	t.Helper()
	if rot.Seq != 2 || rot.DID != h.id.DID || !slices.Equal(rot.Changed, []string{"rotationKeys", "pds"}) || len(rot.Nullified) != 0 ||
		rot.After == nil || !slices.Equal(rot.After.RotationKeys, []string{h.attacker.DID}) || rot.After.PDS != "https://evil.example.com" {
		t.Errorf("%s: the hostile rotation: %+v", what, rot)
	}
	if !strings.Contains(string(rot.Op), `"cid":"`+h.rotation.CID()+`"`) {
		t.Errorf("%s: the rotation's op %s", what, rot.Op)
	}
	// Against the genesis op it builds on, the recovery changes nothing
	// but the chain: it nullifies the rotation.
	if rec.Seq != 3 || !slices.Equal(rec.Changed, []string{"nullified"}) ||
		!slices.Equal(rec.Nullified, []watch.OpRef{{Seq: 2, CID: h.rotation.CID()}}) ||
		rec.After == nil || !slices.Equal(rec.After.RotationKeys, []string{h.id.Rotation[0].DID, h.id.Rotation[1].DID}) {
		t.Errorf("%s: the recovery: %+v", what, rec)
	}
}

// hookReceiver is a webhook receiver that sends what it gets to got.
type hookReceiver struct {
	url string
	got chan hookDelivery
}

type hookDelivery struct {
	body            []byte
	timestamp, sig  string
	contentType, id string
}

func newHookReceiver(t *testing.T, hang <-chan struct{}) *hookReceiver {
	r := &hookReceiver{got: make(chan hookDelivery, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.got <- hookDelivery{b, req.Header.Get(watch.TimestampHeader), req.Header.Get(watch.SignatureHeader), req.Header.Get("Content-Type"), req.Header.Get("PLC-Webhook-ID")}
		if hang != nil {
			select {
			case <-hang:
			case <-req.Context().Done():
			}
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/hook"
	return r
}

func (r *hookReceiver) next(t *testing.T) hookDelivery {
	t.Helper()
	select {
	case d := <-r.got:
		return d
	case <-time.After(time.Minute):
		t.Fatal("no webhook delivery")
		return hookDelivery{}
	}
}

// runWorker runs a webhook worker until the test ends (before the hub
// closes).
func (e *watchEnv) runWorker(opts watch.WorkerOptions) {
	ws, ok := oplog.WebhooksOf(e.store)
	if !ok {
		e.t.Fatal("the store keeps no webhooks")
	}
	w := watch.NewWorker(e.hub, ws, e.key, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	e.t.Cleanup(func() { cancel(); <-done })
}

func (e *watchEnv) addWebhook(did, u string) {
	e.t.Helper()
	ws, _ := oplog.WebhooksOf(e.store)
	if _, err := ws.AddWebhook(context.Background(), did, u, 10, 100, t0); err != nil {
		e.t.Fatal(err)
	}
}

// TestWatchHostileRotationThenRecovery: a watcher of the DID's stream and
// its webhook each see the hostile rotation and then the recovery that
// nullifies it, in order, with what changed; the webhooks' signatures
// verify with the published key; a stream resumed from a seq gets exactly
// the events after it.
func TestWatchHostileRotationThenRecovery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newWatchEnv(t, b, WatchOptions{})
		h := newHostileRotation(t)
		e.submitAt(time.Minute, h.id.DID, h.id.Head)
		recv := newHookReceiver(t, nil)
		e.addWebhook(h.id.DID, recv.url)
		e.runWorker(watch.WorkerOptions{Now: e.clock.Now})

		live := e.openWatch("did=" + url.QueryEscape(h.id.DID))
		e.submitAt(time.Hour, h.id.DID, h.rotation)
		e.submitAt(time.Hour, h.id.DID, h.recovery) // within 72 hours
		rot, rec := live.change(), live.change()
		h.check(t, "live stream", rot, rec)

		// The published key verifies each delivery, over its exact body.
		r := e.get("/_watch/key")
		var pk struct{ Type, PublicKey string }
		if err := json.Unmarshal(r.body, &pk); err != nil || r.status != http.StatusOK || pk.Type != "Ed25519" {
			t.Fatalf("GET /_watch/key: %d %s", r.status, r.body)
		}
		pub, err := base64.StdEncoding.DecodeString(pk.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		var hooked []watch.Change
		for range 2 {
			d := recv.next(t)
			if err := watch.Verify(pub, d.timestamp, d.sig, d.body, e.clock.Now(), 3*time.Hour); err != nil {
				t.Fatalf("delivery %s: %v", d.body, err)
			}
			if d.contentType != "application/json" || d.id == "" {
				t.Errorf("delivery headers: %+v", d)
			}
			var c watch.Change
			if err := json.Unmarshal(d.body, &c); err != nil {
				t.Fatal(err)
			}
			hooked = append(hooked, c)
		}
		h.check(t, "webhook", hooked[0], hooked[1])
		// The webhook's body is the stream's event.
		if a, _ := json.Marshal(hooked[1]); string(a) != mustMarshal(t, rec) {
			t.Errorf("webhook body and stream event differ:\n%s\n%s", a, mustMarshal(t, rec))
		}

		// Resuming: after=1 replays both; Last-Event-ID wins over after.
		resumed := e.openWatch("did=" + url.QueryEscape(h.id.DID) + "&after=1")
		h.check(t, "resumed after 1", resumed.change(), resumed.change())
		again := e.openWatch("did="+url.QueryEscape(h.id.DID)+"&after=0", "Last-Event-ID", "2")
		if c := again.change(); c.Seq != 3 {
			t.Fatalf("resumed with Last-Event-ID 2: seq %d, want 3", c.Seq)
		}

		// The live stream: a keep-alive at its ticker, and the end of its
		// lifetime, announced.
		tick, life := <-e.tickers, <-e.lifetimes
		tick <- time.Time{}
		if c := live.next(); c.comment != "keep-alive" {
			t.Fatalf("after a tick: %+v, want a keep-alive comment", c)
		}
		life <- time.Time{}
		if c := live.next(); c.event != "error" || !strings.Contains(c.data, `"error":"Lifetime"`) {
			t.Fatalf("at the end of its lifetime: %+v", c)
		}
		if _, err := live.rd.ReadByte(); err != io.EOF {
			t.Fatalf("after the lifetime: %v, want EOF", err)
		}
		var m dto.Metric
		if err := e.watcher.ended.WithLabelValues("Lifetime").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
			t.Fatalf("streams ended at their lifetime: %v, %v; want 1", m.GetCounter().GetValue(), err)
		}
	})
}

func mustMarshal(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWatchRefusesBadRequests(t *testing.T) {
	e := newWatchEnv(t, backends[0], WatchOptions{MaxDIDs: 3, MaxWatchers: 1})
	id := optest.NewIdentity(t, "bob.test", 1)
	e.submitAt(time.Minute, id.DID, id.Head)
	did := "did=" + url.QueryEscape(id.DID)
	for _, tc := range []struct{ query, header, msg string }{
		{"", "", "at least one did parameter is required"},
		{"did=did:plc:nope", "", `invalid DID "did:plc:nope"`},
		{"did=x&" + did, "", `invalid DID "x"`},
		{strings.Repeat("did=did:plc:aaaaaaaaaaaaaaaaaaaaaaa2&did=did:plc:aaaaaaaaaaaaaaaaaaaaaaa3&", 1) + "did=did:plc:aaaaaaaaaaaaaaaaaaaaaaa4&" + did, "", "at most 3 DIDs per stream"},
		{did + "&after=-1", "", "after must be a seq (a non-negative integer)"},
		{did + "&after=1x", "", "after must be a seq (a non-negative integer)"},
		{did, "abc", "Last-Event-ID must be a seq (a non-negative integer)"},
		{did + "&after=2", "", "seq is beyond the latest op: 2 > 1"},
	} {
		var r reply
		if tc.header != "" {
			r = e.do(http.MethodGet, "/_watch?"+tc.query, nil, "Last-Event-ID", tc.header)
		} else {
			r = e.get("/_watch?" + tc.query)
		}
		r.expectMessage(t, http.StatusBadRequest, tc.msg)
	}
	// One stream at most.
	e.openWatch(did)
	r := e.get("/_watch?" + did)
	r.expectMessage(t, http.StatusServiceUnavailable, "too many open watch streams")
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
}

func TestWatchRoutesWithoutWatch(t *testing.T) {
	e := newAPIEnv(t, backends[0], envOptions{})
	e.get("/_watch?did=did:plc:aaaaaaaaaaaaaaaaaaaaaaa2").expectMessage(t, http.StatusNotFound, "Not Found: this directory serves no watch streams")
	e.get("/_watch/key").expectMessage(t, http.StatusNotFound, "Not Found: this directory delivers no webhooks")
}

// TestWebhookHangingReceiverDoesNotSlowPosts: while a webhook's receiver
// holds a delivery without answering, POSTs of ops (of its DID and
// others) are answered and the watch streams carry them: deliveries run
// after the commits, beside the write path.
func TestWebhookHangingReceiverDoesNotSlowPosts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newWatchEnv(t, b, WatchOptions{})
		hang := make(chan struct{})
		defer close(hang)
		id := optest.NewIdentity(t, "carol.test", 1)
		e.submitAt(time.Minute, id.DID, id.Head)
		recv := newHookReceiver(t, hang)
		e.addWebhook(id.DID, recv.url)
		e.runWorker(watch.WorkerOptions{Timeout: time.Hour, Now: e.clock.Now})
		live := e.openWatch("did=" + url.QueryEscape(id.DID))

		op := id.Update(t, nil, 0, "carol1.test")
		id.Accept(op)
		e.submitAt(time.Minute, id.DID, op)
		if d := recv.next(t); !strings.Contains(string(d.body), `"seq":2`) {
			t.Fatalf("delivery %s", d.body)
		}
		// The receiver now hangs; the directory goes on.
		for i := range 3 {
			op := id.Update(t, nil, 0, optest.Handle(i))
			id.Accept(op)
			e.submitAt(time.Minute, id.DID, op)
			other := optest.NewIdentity(t, optest.Handle(10+i), 1)
			e.submitAt(time.Minute, other.DID, other.Head)
		}
		for _, want := range []int64{2, 3, 5, 7} {
			if c := live.change(); c.Seq != want {
				t.Fatalf("stream: seq %d, want %d", c.Seq, want)
			}
		}
	})
}

// blockedWriter is a ResponseWriter whose writes, after the first, wait
// until release is closed; entered receives each write's bytes as it
// starts.
type blockedWriter struct {
	header  http.Header
	entered chan string
	release chan struct{}
	writes  int
	out     strings.Builder
}

func (w *blockedWriter) Header() http.Header { return w.header }
func (w *blockedWriter) WriteHeader(int)     {}
func (w *blockedWriter) Flush()              {}
func (w *blockedWriter) Write(b []byte) (int, error) {
	w.entered <- string(b)
	if w.writes++; w.writes > 1 {
		<-w.release
	}
	return w.out.Write(b)
}

// TestSlowWatchClientIsDroppedWithAnErrorEvent: a client that does not
// take its events while more than Buffer of them come is sent what was
// queued, then a TooSlow error event, and dropped; it never holds up the
// Hub.
func TestSlowWatchClientIsDroppedWithAnErrorEvent(t *testing.T) {
	e := newWatchEnv(t, backends[0], WatchOptions{})
	w := NewWatcher(e.hub, WatchOptions{Buffer: 1, NewTicker: func(time.Duration) (<-chan time.Time, func()) { return nil, func() {} },
		After: func(time.Duration) <-chan time.Time { return nil }})
	id := optest.NewIdentity(t, "dave.test", 1)
	e.submitAt(time.Minute, id.DID, id.Head)
	bw := &blockedWriter{header: http.Header{}, entered: make(chan string, 100), release: make(chan struct{})}
	req := httptest.NewRequest(http.MethodGet, "/_watch?did="+url.QueryEscape(id.DID), nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.ServeHTTP(bw, req)
	}()
	<-bw.entered // ": watching"
	op := id.Update(t, nil, 0, "dave1.test")
	id.Accept(op)
	e.submitAt(time.Minute, id.DID, op)
	if got := <-bw.entered; !strings.HasPrefix(got, "id: 2\n") {
		t.Fatalf("write %q, want the event of seq 2", got)
	}
	// The handler is stuck writing seq 2: four more ops, committed at
	// once, overflow its buffer of one.
	var lines strings.Builder
	for i := range 4 {
		op := id.Update(t, nil, 0, optest.Handle(i))
		id.Accept(op)
		lines.Write(validate.AppendSequencedJSON(nil, id.DID, op, e.clock.Now().Add(time.Duration(i+1)*time.Second), int64(3+i)))
		lines.WriteByte('\n')
	}
	if _, err := oplog.Import(context.Background(), e.log, strings.NewReader(lines.String()), oplog.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	// Every Watch of the Hub sees the batch at once: once another has
	// it, the slow one has overflowed.
	other, err := e.hub.Watch(context.Background(), []string{id.DID}, 2, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for range 4 {
		if _, err := other.Next(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	close(bw.release)
	<-done
	for len(bw.entered) > 0 {
		<-bw.entered
	}
	out := bw.out.String()
	if !strings.HasSuffix(out, "event: error\ndata: {\"error\":\"TooSlow\",\"message\":\"more than 1 events waited for this client: reconnect with Last-Event-ID\"}\n\n") {
		t.Fatalf("the stream did not end with TooSlow:\n%s", out)
	}
	if n := strings.Count(out, "event: op\n"); n < 2 || n > 3 {
		t.Fatalf("%d op events before the error, want the one being written and those queued (2 or 3):\n%s", n, out)
	}
}
