package watch_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/validate"
	"github.com/plcdir/plc/watch"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type env struct {
	t     testing.TB
	clock *testclock.Clock
	store *oplog.SQLiteStore
	log   *oplog.Log
	hub   *watch.Hub
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, watch.HubOptions{PollInterval: time.Hour})
}

func newEnvWith(t testing.TB, opts watch.HubOptions) *env {
	t.Helper()
	s, _ := storetest.SQLite(t)
	e := &env{t: t, clock: testclock.New(t0), store: s}
	e.log = oplog.NewLog(s, oplog.Options{Now: e.clock.Now, NoRateLimit: true})
	t.Cleanup(e.log.Close)
	e.hub = watch.NewHub(e.log, opts)
	t.Cleanup(e.hub.Close)
	return e
}

func (e *env) submit(did string, op *validate.Op) {
	e.t.Helper()
	e.clock.Advance(time.Minute)
	if _, err := e.log.Submit(context.Background(), did, op); err != nil {
		e.t.Fatalf("submit: %v", err)
	}
}

// hostile is a DID with two rotation keys whose lower-priority key
// rotates every key to an attacker's, and the higher-priority key's
// recovery of it.
type hostile struct {
	id        *optest.Identity
	rotation  *validate.Op // signed by rotation key 1: rotation keys [attacker]
	recovery  *validate.Op // signed by rotation key 0, after the genesis op
	attacker  optest.Key
	recovered validate.Operation
}

func newHostile(t *testing.T) *hostile {
	h := &hostile{id: optest.NewIdentity(t, "alice.test", 2), attacker: optest.NewKey(t, false)}
	body := h.id.Body
	body.Prev = h.id.Head.CID()
	body.RotationKeys = []string{h.attacker.DID}
	body.Services = []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://evil.example.com"}}
	h.rotation = optest.Sign(t, body, h.id.Rotation[1])
	rec := h.id.Body
	rec.Prev = h.id.Head.CID()
	rec.AlsoKnownAs = []string{"at://alice2.test"}
	h.recovery = optest.Sign(t, rec, h.id.Rotation[0])
	h.recovered = rec
	return h
}

func decode(t *testing.T, b []byte) watch.Change {
	t.Helper()
	var c watch.Change
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("event %s: %v", b, err)
	}
	return c
}

// CheckHostile checks the Events of the hostile rotation (seq 2) and the
// recovery (seq 3) of h.
func checkHostile(t *testing.T, h *hostile, rot, rec watch.Change) {
	t.Helper()
	if rot.Seq != 2 || rot.DID != h.id.DID || !slices.Equal(rot.Changed, []string{"rotationKeys", "pds"}) || len(rot.Nullified) != 0 {
		t.Errorf("hostile rotation: seq %d changed %v nullified %v", rot.Seq, rot.Changed, rot.Nullified)
	}
	if rot.Before == nil || !slices.Equal(rot.Before.RotationKeys, []string{h.id.Rotation[0].DID, h.id.Rotation[1].DID}) ||
		rot.After == nil || !slices.Equal(rot.After.RotationKeys, []string{h.attacker.DID}) || rot.After.PDS != "https://evil.example.com" {
		t.Errorf("hostile rotation: before %+v after %+v", rot.Before, rot.After)
	}
	if !strings.Contains(string(rot.Op), `"cid":"`+h.rotation.CID()+`"`) || !strings.Contains(string(rot.Op), `"seq":2`) {
		t.Errorf("hostile rotation: op %s", rot.Op)
	}
	// The recovery builds on the genesis op: against it only the handle
	// changed, and it nullified the rotation.
	if rec.Seq != 3 || !slices.Equal(rec.Changed, []string{"handle", "nullified"}) ||
		len(rec.Nullified) != 1 || rec.Nullified[0].Seq != 2 || rec.Nullified[0].CID != h.rotation.CID() {
		t.Errorf("recovery: seq %d changed %v nullified %v", rec.Seq, rec.Changed, rec.Nullified)
	}
	if rec.After == nil || !slices.Equal(rec.After.AlsoKnownAs, []string{"at://alice2.test"}) || rec.Before.PDS != "https://pds.example.com" {
		t.Errorf("recovery: before %+v after %+v", rec.Before, rec.After)
	}
}

func TestDescribeHostileRotationThenRecovery(t *testing.T) {
	e := newEnv(t)
	h := newHostile(t)
	e.submit(h.id.DID, h.id.Head)
	e.submit(h.id.DID, h.rotation)
	e.submit(h.id.DID, h.recovery)
	ops, err := e.store.Ops(context.Background(), h.id.DID)
	if err != nil {
		t.Fatal(err)
	}
	var cs []watch.Change
	for seq := int64(1); seq <= 3; seq++ {
		ev, err := watch.Describe(ops, seq)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, decode(t, ev.JSON))
	}
	if g := cs[0]; !slices.Equal(g.Changed, []string{"created"}) || g.Before != nil || g.After == nil {
		t.Errorf("genesis: %+v", g)
	}
	checkHostile(t, h, cs[1], cs[2])
	if _, err := watch.Describe(ops, 4); !errors.Is(err, oplog.ErrNotFound) {
		t.Errorf("Describe of a missing seq: %v", err)
	}
	tomb := optest.Sign(t, validate.Operation{Type: validate.TypeTombstone, Prev: h.recovery.CID()}, h.id.Rotation[0])
	e.submit(h.id.DID, tomb)
	ops, _ = e.store.Ops(context.Background(), h.id.DID)
	ev, err := watch.Describe(ops, 4)
	if err != nil {
		t.Fatal(err)
	}
	if c := decode(t, ev.JSON); !slices.Equal(c.Changed, []string{"tombstone"}) || c.After != nil {
		t.Errorf("tombstone: %+v", c)
	}
}

func next(t *testing.T, w *watch.Watch) watch.Change {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ev, err := w.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return decode(t, ev.JSON)
}

func TestWatchResumesWithoutGapOrDuplicate(t *testing.T) {
	e := newEnv(t)
	h := newHostile(t)
	other := optest.NewIdentity(t, "bob.test", 1)
	e.submit(h.id.DID, h.id.Head)
	e.submit(other.DID, other.Head)
	e.submit(h.id.DID, h.rotation) // seq 3
	ctx := context.Background()
	// A live Watch holds the Hub at the latest seq, so the next one
	// resumes partly from the store and partly live.
	live, err := e.hub.Watch(ctx, []string{h.id.DID}, -1, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	w, err := e.hub.Watch(ctx, []string{h.id.DID, other.DID}, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	e.submit(h.id.DID, h.recovery) // seq 4
	var seqs []int64
	for range 3 {
		seqs = append(seqs, next(t, w).Seq)
	}
	if !slices.Equal(seqs, []int64{2, 3, 4}) {
		t.Fatalf("resumed after 1: seqs %v, want [2 3 4]", seqs)
	}
	if c := next(t, live); c.Seq != 4 || !slices.Contains(c.Changed, "nullified") {
		t.Fatalf("live watch: %+v, want the recovery at seq 4", c)
	}
	if _, err := e.hub.Watch(ctx, []string{h.id.DID}, 99, 10); !errors.Is(err, watch.ErrFutureSeq) {
		t.Fatalf("after 99 of 4: %v, want ErrFutureSeq", err)
	}
}

// TestSlowWatcherIsDropped: a Watch that does not take its Events is
// ended with ErrTooSlow after those its buffer holds; the Hub and the
// other Watches go on.
func TestSlowWatcherIsDropped(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := optest.NewIdentity(t, "carol.test", 1)
	ops := []*validate.Op{id.Head}
	for i := range 3 {
		op := id.Update(t, nil, 0, optest.Handle(i))
		id.Accept(op)
		ops = append(ops, op)
	}
	slow, err := e.hub.Watch(ctx, []string{id.DID}, -1, 1)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := e.hub.Watch(ctx, []string{id.DID}, -1, 10)
	if err != nil {
		t.Fatal(err)
	}
	// One transaction: the Hub reads the four ops at once.
	var lines bytes.Buffer
	for i, op := range ops {
		lines.Write(validate.AppendSequencedJSON(nil, id.DID, op, t0.Add(time.Duration(i)*time.Second), int64(i+1)))
		lines.WriteByte('\n')
	}
	if st, err := oplog.Import(ctx, e.log, &lines, oplog.ImportOptions{}); err != nil || st.Batches != 1 || st.Imported != 4 {
		t.Fatalf("import: %+v, %v; want 4 ops in one batch", st, err)
	}
	// The Hub fans a page out to every Watch at once: once fast has the
	// last event, slow has been dealt with.
	for want := int64(1); want <= 4; want++ {
		if c := next(t, fast); c.Seq != want {
			t.Fatalf("fast: %d, want %d", c.Seq, want)
		}
	}
	if c := next(t, slow); c.Seq != 1 {
		t.Fatalf("slow: first event %d, want 1", c.Seq)
	}
	if ev, err := slow.Next(ctx); !errors.Is(err, watch.ErrTooSlow) {
		t.Fatalf("slow: %d, %v; want ErrTooSlow", ev.Seq, err)
	}
}

// Webhooks.

type delivery struct {
	body      []byte
	timestamp string
	signature string
}

// receiver is a webhook receiver whose answers the test sets.
type receiver struct {
	srv    *httptest.Server
	got    chan delivery
	mu     sync.Mutex
	status []int // the next answers; 200 when empty
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{got: make(chan delivery, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		status := 200
		if len(r.status) > 0 {
			status, r.status = r.status[0], r.status[1:]
		}
		r.mu.Unlock()
		r.got <- delivery{b, req.Header.Get(watch.TimestampHeader), req.Header.Get(watch.SignatureHeader)}
		w.WriteHeader(status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) next(t *testing.T) delivery {
	t.Helper()
	select {
	case d := <-r.got:
		return d
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery")
		return delivery{}
	}
}

// fakeAfter is the Worker's clock: each backoff wait is sent to waits and
// lasts until the test fires it; the reloads never come.
type fakeAfter struct {
	waits chan time.Duration
	fire  chan time.Time
}

const reload = 1000 * time.Hour

func newFakeAfter() *fakeAfter {
	return &fakeAfter{waits: make(chan time.Duration, 100), fire: make(chan time.Time)}
}

func (f *fakeAfter) after(d time.Duration) <-chan time.Time {
	if d == reload {
		return nil
	}
	f.waits <- d
	return f.fire
}

func newKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (e *env) runWorker(key ed25519.PrivateKey, opts watch.WorkerOptions) (stop func()) {
	opts.Reload = reload
	w := watch.NewWorker(e.hub, e.store, key, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	stop = func() { cancel(); <-done }
	e.t.Cleanup(stop)
	return stop
}

func TestWebhookReceiverDownThenUpGetsEverythingOnce(t *testing.T) {
	e := newEnv(t)
	h := newHostile(t)
	e.submit(h.id.DID, h.id.Head)
	r := newReceiver(t)
	hook, err := e.store.AddWebhook(context.Background(), h.id.DID, r.srv.URL+"/hook", 10, 100, t0)
	if err != nil {
		t.Fatal(err)
	}
	r.status = []int{503, 500, 503}
	key := newKey(t)
	clock := newFakeAfter()
	reg := prometheus.NewRegistry()
	e.runWorker(key, watch.WorkerOptions{After: clock.after, Now: e.clock.Now, MinBackoff: time.Second, MaxBackoff: 3 * time.Second, Registry: reg})
	e.submit(h.id.DID, h.rotation)
	e.submit(h.id.DID, h.recovery)

	// Three failed attempts at the rotation, each followed by a longer wait.
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second} {
		d := r.next(t)
		if c := decode(t, d.body); c.Seq != 2 {
			t.Fatalf("attempt %d: seq %d, want 2", i+1, c.Seq)
		}
		if got := <-clock.waits; got != want {
			t.Fatalf("backoff after attempt %d: %s, want %s", i+1, got, want)
		}
		clock.fire <- time.Time{}
	}
	var cs []watch.Change
	for range 2 {
		d := r.next(t)
		if err := watch.Verify(key.Public().(ed25519.PublicKey), d.timestamp, d.signature, d.body, e.clock.Now(), time.Minute); err != nil {
			t.Fatalf("signature: %v", err)
		}
		if err := watch.Verify(key.Public().(ed25519.PublicKey), d.timestamp, d.signature, append(d.body, ' '), e.clock.Now(), 0); !errors.Is(err, watch.ErrBadSignature) {
			t.Fatalf("a changed body verifies: %v", err)
		}
		cs = append(cs, decode(t, d.body))
	}
	checkHostile(t, h, cs[0], cs[1])
	// The cursor is saved after each delivery.
	waitCursor(t, e.store, hook.ID, 3)
	select {
	case d := <-r.got:
		t.Fatalf("an extra delivery: %s", d.body)
	default:
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			got[name] = m.GetCounter().GetValue()
		}
	}
	if got["plc_webhook_attempts_total/ok"] != 2 || got["plc_webhook_attempts_total/failed"] != 3 {
		t.Fatalf("attempt metrics %v, want 2 ok and 3 failed", got)
	}
}

func waitCursor(t *testing.T, s oplog.WebhookStore, id, want int64) oplog.Webhook {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		hooks, err := s.Webhooks(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hooks {
			if h.ID == id && (h.Cursor == want || h.Disabled) {
				return h
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook %d: cursor never reached %d: %+v", id, want, hooks)
		}
		runtimeGosched()
	}
}

func TestWebhookResumesFromItsCursorAfterARestart(t *testing.T) {
	e := newEnv(t)
	h := newHostile(t)
	e.submit(h.id.DID, h.id.Head)
	r := newReceiver(t)
	hook, err := e.store.AddWebhook(context.Background(), h.id.DID, r.srv.URL, 10, 100, t0)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	stop := e.runWorker(key, watch.WorkerOptions{After: newFakeAfter().after, Now: e.clock.Now})
	e.submit(h.id.DID, h.rotation)
	if c := decode(t, r.next(t).body); c.Seq != 2 {
		t.Fatalf("seq %d, want 2", c.Seq)
	}
	waitCursor(t, e.store, hook.ID, 2)
	stop()
	e.submit(h.id.DID, h.recovery) // while no worker runs
	e.runWorker(key, watch.WorkerOptions{After: newFakeAfter().after, Now: e.clock.Now})
	if c := decode(t, r.next(t).body); c.Seq != 3 {
		t.Fatalf("after the restart: seq %d, want 3 (and not 2 again)", c.Seq)
	}
	waitCursor(t, e.store, hook.ID, 3)
}

func TestWebhookAttemptsRunOutDisableIt(t *testing.T) {
	e := newEnv(t)
	h := newHostile(t)
	e.submit(h.id.DID, h.id.Head)
	r := newReceiver(t)
	r.status = []int{500, 500}
	hook, err := e.store.AddWebhook(context.Background(), h.id.DID, r.srv.URL, 10, 100, t0)
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeAfter()
	e.runWorker(newKey(t), watch.WorkerOptions{After: clock.after, Now: e.clock.Now, MaxAttempts: 2})
	e.submit(h.id.DID, h.rotation)
	r.next(t)
	<-clock.waits
	clock.fire <- time.Time{}
	r.next(t)
	got := waitCursor(t, e.store, hook.ID, -1)
	if !got.Disabled || got.Cursor != 1 || got.Failures != 2 || !strings.Contains(got.LastError, "500") {
		t.Fatalf("after the attempts ran out: %+v; want disabled at cursor 1", got)
	}
}

// TestWebhookRedirectIsNotFollowed: a receiver's redirect is a failed
// attempt; its target is never asked.
func TestWebhookRedirectIsNotFollowed(t *testing.T) {
	e := newEnv(t)
	h := newHostile(t)
	e.submit(h.id.DID, h.id.Head)
	target := newReceiver(t)
	redirected := make(chan struct{}, 10)
	from := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirected <- struct{}{}
		http.Redirect(w, r, target.srv.URL, http.StatusTemporaryRedirect)
	}))
	defer from.Close()
	if _, err := e.store.AddWebhook(context.Background(), h.id.DID, from.URL, 10, 100, t0); err != nil {
		t.Fatal(err)
	}
	clock := newFakeAfter()
	e.runWorker(newKey(t), watch.WorkerOptions{After: clock.after, Now: e.clock.Now})
	e.submit(h.id.DID, h.rotation)
	<-redirected
	<-clock.waits // the attempt failed: a backoff
	select {
	case <-target.got:
		t.Fatal("the redirect was followed")
	default:
	}
}

func TestCheckURL(t *testing.T) {
	for _, u := range []string{"https://a.example/hook", "http://127.0.0.1:8080/x?y=1"} {
		if err := watch.CheckURL(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for _, u := range []string{"", "ftp://a.example/", "file:///etc/passwd", "https://", "/relative", "javascript:alert(1)", "https://a.example/" + strings.Repeat("a", 3000)} {
		if err := watch.CheckURL(u); err == nil {
			t.Errorf("%q: accepted", u)
		}
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "webhook.key")
	if _, err := watch.OpenKey(path, false); err == nil {
		t.Fatal("a missing key file opened without create")
	}
	k, err := watch.OpenKey(path, true)
	if err != nil {
		t.Fatal(err)
	}
	again, err := watch.OpenKey(path, true)
	if err != nil || !k.Equal(again) {
		t.Fatalf("reopened: %v, same key %v", err, k.Equal(again))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v, %v; want 0600", fi.Mode(), err)
	}
	bad := filepath.Join(t.TempDir(), "bad.key")
	if err := writeFile(bad, "not a key\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := watch.OpenKey(bad, true); err == nil {
		t.Fatal("a malformed key file opened")
	}
}

// TestWebhookKeyCreatedByProcessesAtOnceIsOneKey: servers starting
// together on one data directory (two plc serve on one PostgreSQL) agree
// on one key; none fails because another created the file first, nor
// reads it half-written.
func TestWebhookKeyCreatedByProcessesAtOnceIsOneKey(t *testing.T) {
	shared := filepath.Join(t.TempDir(), "shared.key")
	keys := make(chan ed25519.PrivateKey, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			k, err := watch.OpenKey(shared, true)
			if err != nil {
				t.Error(err)
			}
			keys <- k
		})
	}
	wg.Wait()
	close(keys)
	first := <-keys
	for k := range keys {
		if !first.Equal(k) {
			t.Fatal("two keys created for one file")
		}
	}
}

// TestWebhookFarBehindGetsEverythingInOrder: a webhook whose DID has more
// ops after its cursor than a Watch replays (its worker was stopped while
// they came) gets them all, in order, once.
func TestWebhookFarBehindGetsEverythingInOrder(t *testing.T) {
	e := newEnvWith(t, watch.HubOptions{PollInterval: time.Hour, MaxBacklog: 2})
	id := optest.NewIdentity(t, "erin.test", 1)
	e.submit(id.DID, id.Head)
	r := newReceiver(t)
	hook, err := e.store.AddWebhook(context.Background(), id.DID, r.srv.URL, 10, 100, t0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		op := id.Update(t, nil, 0, optest.Handle(i))
		id.Accept(op)
		e.submit(id.DID, op)
	}
	if _, err := e.hub.Watch(context.Background(), []string{id.DID}, 1, 10); !errors.Is(err, watch.ErrBacklog) {
		t.Fatalf("a Watch after seq 1: %v, want ErrBacklog", err)
	}
	e.runWorker(newKey(t), watch.WorkerOptions{After: newFakeAfter().after, Now: e.clock.Now})
	for want := int64(2); want <= 6; want++ {
		if c := decode(t, r.next(t).body); c.Seq != want {
			t.Fatalf("delivery of seq %d, want %d", c.Seq, want)
		}
	}
	waitCursor(t, e.store, hook.ID, 6)
	select {
	case d := <-r.got:
		t.Fatalf("an extra delivery: %s", d.body)
	default:
	}
}

// TestTwoProcessesDeliverEachOpOnce: of two workers over one database
// (two plc serve on one PostgreSQL), only the holder of the delivery lease
// delivers; when it stops, the other takes over from the cursor.
func TestTwoProcessesDeliverEachOpOnce(t *testing.T) {
	e := newEnv(t)
	h := newHostile(t)
	e.submit(h.id.DID, h.id.Head)
	r := newReceiver(t)
	hook, err := e.store.AddWebhook(context.Background(), h.id.DID, r.srv.URL, 10, 100, t0)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	stopFirst := e.runWorker(key, watch.WorkerOptions{After: newFakeAfter().after, Now: e.clock.Now})
	secondAfter := make(chan time.Time)
	second := watch.NewWorker(e.hub, e.store, key, watch.WorkerOptions{Reload: time.Minute, Now: e.clock.Now,
		After: func(d time.Duration) <-chan time.Time {
			if d == time.Minute {
				return secondAfter
			}
			return nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); second.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	e.submit(h.id.DID, h.rotation)
	if c := decode(t, r.next(t).body); c.Seq != 2 {
		t.Fatalf("seq %d, want 2", c.Seq)
	}
	waitCursor(t, e.store, hook.ID, 2)
	stopFirst() // releases the lease
	secondAfter <- time.Time{}
	e.submit(h.id.DID, h.recovery)
	if c := decode(t, r.next(t).body); c.Seq != 3 {
		t.Fatalf("after the takeover: seq %d, want 3 (and not 2 again)", c.Seq)
	}
	waitCursor(t, e.store, hook.ID, 3)
	select {
	case d := <-r.got:
		t.Fatalf("a second delivery: %s", d.body)
	default:
	}
}

// TestWatchSeesCommitsOfAnotherProcess: ops committed by another process
// sharing the database (no commit signal here) reach the watches at the
// next poll.
func TestWatchSeesCommitsOfAnotherProcess(t *testing.T) {
	s, path := storetest.SQLite(t)
	clock := testclock.New(t0)
	here := oplog.NewLog(s, oplog.Options{Now: clock.Now, NoRateLimit: true})
	t.Cleanup(here.Close)
	hub := watch.NewHub(here, watch.HubOptions{PollInterval: time.Millisecond})
	t.Cleanup(hub.Close)
	other, err := oplog.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	there := oplog.NewLog(other, oplog.Options{Now: clock.Now, NoRateLimit: true})
	t.Cleanup(there.Close)

	id := optest.NewIdentity(t, "frank.test", 1)
	w, err := hub.Watch(context.Background(), []string{id.DID}, -1, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := there.Submit(context.Background(), id.DID, id.Head); err != nil {
		t.Fatal(err)
	}
	if c := next(t, w); c.Seq != 1 || !slices.Equal(c.Changed, []string{"created"}) {
		t.Fatalf("event %+v, want the genesis op", c)
	}
}
